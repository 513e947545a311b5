"""Shared paths, and a marker per test folder (unit, integration, contract, training)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.paths import (  # noqa: F401 - the paths the tests import from here
    CIFAR_TRAIN,
    CIFAR_VAL,
    HOUSING_CSV,
    IMAGENET_INDEX,
    MODELS,
    REPO,
    SAMPLE_PHOTOS,
    SHARED_DATA,
)
from loadtests.ports import free_port

# The in-process app (test_inprocess.py) serves gRPC too: on a port of the suite's own, not the default 8001
# that a server a test starts later (or another program) may want.
os.environ.setdefault("NNSERVE_GRPC_PORT", str(free_port()))

# The container tests need a built image: `make container-test` builds one and names it here.
collect_ignore = [] if os.environ.get("NNSERVE_IMAGE") else ["container"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in ("unit", "integration", "contract", "training", "container", "deploy"):
            item.add_marker(getattr(pytest.mark, folder))


_STATUS = pytest.StashKey[str | None]()


def _git_status() -> str | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None  # None: not a git checkout (an unpacked copy)


def _controller(config: pytest.Config) -> bool:
    """Not one of pytest-xdist's workers: only the process that starts before them and ends after them sees
    the whole run's effect (a worker ending early would see the other's files mid-test)."""
    return not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _controller(session.config):
        session.config.stash[_STATUS] = _git_status()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test run must leave the checkout as it found it: no file written into the tree, no tracked
    file changed. A run that does fails, naming what it changed."""
    if not _controller(session.config):
        return
    before, after = session.config.stash.get(_STATUS, None), _git_status()
    if before is None or after is None or before == after:
        return
    changed = sorted(set(after.splitlines()) - set(before.splitlines()))
    session.config.get_terminal_writer().line(
        "the test run changed the checkout (git status): " + "; ".join(changed or after.splitlines()), red=True
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- tests that run alone under pytest-xdist ----------------------------------------------------------
# A test marked `alone` generates load (Locust) and judges what the run answered: with the other test
# process training a network on the same two cores, Locust once got a CPU share that sent 8 requests in
# 10 s, and "no request completed". Every test holds a lock on a file of the run's: a shared one, or an
# exclusive one for an `alone` test, which so waits for the test running beside it and keeps the next one
# waiting. A second file is the turnstile a test passes through first: once an `alone` test waits at it,
# no new test takes a shared lock ahead of it.


LOCKS = "NNSERVE_TEST_LOCKS"  # the folder of the two lock files, made by the controlling process
_MADE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    if _controller(config) and config.getoption("numprocesses", None):  # before it starts its workers
        os.environ[LOCKS] = config.stash[_MADE] = tempfile.mkdtemp(prefix="nnserve-test-locks-")


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_MADE, None)  # only the folder this process made
    if made is not None:
        os.environ.pop(LOCKS, None)
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(autouse=True)
def _cores(request: pytest.FixtureRequest) -> Iterator[None]:
    locks = os.environ.get(LOCKS)
    if locks is None or _controller(request.config):  # one process: every test runs alone
        yield
        return
    alone = request.node.get_closest_marker("alone") is not None
    with open(f"{locks}/turnstile", "a") as turnstile, open(f"{locks}/cores", "a") as cores:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(cores, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(cores, fcntl.LOCK_UN)
