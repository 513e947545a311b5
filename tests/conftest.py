"""Shared paths, and a marker per test folder (unit, integration, contract, training)."""

from __future__ import annotations

import os
import subprocess
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
