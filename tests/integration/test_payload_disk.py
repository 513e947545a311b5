"""The payload log directory keeps one byte budget whatever its workers did (service/dataplane/logbudget.py), and a
full disk costs the payload log and feedback, never a prediction (service/dataplane/payloads.py, feedback.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
import uuid

import httpx
import pytest
from prometheus_client import REGISTRY

from service.dataplane.feedback import Outcomes
from service.dataplane.logbudget import Budget
from service.dataplane.payloads import PayloadLog
from service.settings import Settings
from service.worker import standalone
from tests.conftest import MODELS
from tests.integration.test_http import HOUSE


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _evicted(what: str) -> float:
    return REGISTRY.get_sample_value("nnserve_payload_log_evicted_bytes_total", {"what": what}) or 0.0


def test_the_directory_keeps_its_budget_oldest_first_with_files_of_workers_gone(tmp_path):
    outcomes = Outcomes(tmp_path, ttl_s=1e9, window=100, keep_s=1e9)
    now = time.time()
    outcomes.remember([(uuid.uuid4().hex, "m", "1", now - 1e5 + i, [0.5] * 20) for i in range(20_000)])
    dead, live = _dead_pid(), os.getpid()
    files = {  # name -> (bytes, age in s)
        f"payloads-{dead}.jsonl": (3_000_000, 500),  # a worker killed -9: never rotated
        f"payloads-{dead}.jsonl.1": (3_000_000, 900),
        f"payloads-{live}.jsonl.1": (3_000_000, 100),
        f"payloads-{live}.jsonl": (1_000_000, 0),  # a live worker's current file
    }
    for name, (size, age) in files.items():
        (tmp_path / name).write_bytes(b"x" * size)
        os.utime(tmp_path / name, (now - age, now - age))
    store = outcomes.size()
    budget = Budget(tmp_path, 4_000_000 + store // 2, outcomes)  # room for the live file, half the store
    before = (_evicted("logs"), _evicted("outcomes"))
    budget.enforce()
    left = {p.name for p in tmp_path.iterdir()}
    assert f"payloads-{live}.jsonl" in left and f"payloads-{dead}.jsonl.1" not in left  # the oldest went first
    assert f"payloads-{dead}.jsonl" not in left and f"payloads-{live}.jsonl.1" not in left
    assert budget.usage() <= budget.max_bytes, (budget.usage(), budget.max_bytes)
    rows = outcomes.db().execute("SELECT count(*), min(time) FROM predictions").fetchone()
    assert 0 < rows[0] < 20_000 and rows[1] > now - 1e5  # the oldest rows went, the newest stayed
    assert _evicted("logs") - before[0] == 9_000_000 and _evicted("outcomes") > before[1]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk case is not run")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk) -> None:
    with open(disk / "filler", "wb") as f:  # whatever else filled the disk
        while True:
            try:
                f.write(b"\0" * 65536)
                f.flush()
            except OSError:
                return


def test_a_full_disk_costs_the_log_and_feedback_a_503_never_a_prediction(small_disk, caplog):
    app = standalone(Settings(models_dir=MODELS, payload_log_dir=small_disk / "payloads"))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            logged = await c.post("/v1/housing-price/predict", json=HOUSE)
            request_id = logged.headers["x-bentoml-request-id"]
            store, deadline = Outcomes(small_disk / "payloads", 1e9, 10, 1e9), time.monotonic() + 10
            while store._logged(request_id) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # the writer thread logs it: polled, with a deadline
            _fill(small_disk)
            feedback = await c.post("/v1/housing-price/feedback", json={"request_id": request_id, "outcome": 500_000})
            answers = []
            for _ in range(20):
                answers.append(await c.post("/v1/housing-price/predict", json=HOUSE))
                await asyncio.sleep(0.06)  # a batch per request for the writer, each one failing
        return feedback, answers

    with caplog.at_level(logging.ERROR, logger="service.dataplane.payloads"):
        feedback, answers = asyncio.run(scenario())
    assert feedback.status_code == 503 and "could not be stored" in feedback.json()["error"], feedback.text
    assert "disk is full" in feedback.json()["error"]
    assert [a.status_code for a in answers] == [200] * 20
    said = [r for r in caplog.records if "writing fails" in r.getMessage()]
    assert len(said) == 1 and not said[0].exc_info, [r.getMessage() for r in said]  # one line, no traceback


def test_a_payload_log_over_budget_trims_itself_as_it_writes(tmp_path):
    outcomes = Outcomes(tmp_path, ttl_s=1e9, window=100, keep_s=1e9)
    log = PayloadLog(tmp_path, 1.0, 200_000, 3, 10_000, outcomes, budget=2_000_000)
    (tmp_path / f"payloads-{_dead_pid()}.jsonl").write_bytes(b"x" * 3_000_000)  # left by a worker gone
    log.budget.last = 0.0  # its next round is due
    for i in range(2_000):
        log.submit({"request_id": f"{i:016x}", "model": "m", "version": "1", "route": "/v1/m/predict",
                    "request": [{"x": i}], "answer": {"y": 1}}, [1.0])  # fmt: skip
    deadline = time.monotonic() + 20
    while (log.written + log.dropped < 2_000 or log.budget.usage() > 2_000_000) and time.monotonic() < deadline:
        log.wake.set()
        time.sleep(0.1)  # polling the writer thread, with a deadline
    assert log.written == 2_000 and log.budget.usage() <= 2_000_000
