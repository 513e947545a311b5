"""Sampled payload logs under Locust load, on a real `bentoml serve` with its two workers: every answer
is logged while the writer keeps up, and what it cannot take is dropped and counted, never lost silently."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from loadtests.run import main as locust
from loadtests.serving import bentoml_serve
from tests.conftest import MODELS

pytestmark = pytest.mark.alone  # Locust's load: no other test beside it (tests/conftest.py)


def _counter(metrics: str, name: str, **labels: str) -> float:
    """A counter's value summed over its series with these labels (0 when it has none yet)."""
    total = 0.0
    for line in metrics.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _load(url: str, tmp_path: Path, users: int) -> tuple[float, float, float]:
    """Locust for 10 s, then the server's own counts once the writer has settled: predictions answered
    200, payload entries written, dropped."""
    slo = tmp_path / "slo.toml"
    slo.write_text("max_failure_ratio = 0.0\n")
    args = ["--url", url, "--duration", "10", "--users", str(users), "--slo", str(slo), "--reports", str(tmp_path)]
    assert locust(args) == 0
    seen, end = None, time.monotonic() + 20
    while time.monotonic() < end:
        metrics = httpx.get(url + "/metrics", timeout=10).text
        counts = (
            _counter(metrics, "nnserve_predictions_total", status="200"),
            _counter(metrics, "nnserve_payload_log_entries_total", outcome="written"),
            _counter(metrics, "nnserve_payload_log_entries_total", outcome="dropped"),
        )
        if counts == seen and counts[0] == counts[1] + counts[2]:
            return counts
        seen = counts
        time.sleep(1)
    raise AssertionError(f"payload log counts never settled to answered = written + dropped: {seen}")


def _entries(directory: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob("payloads-*.jsonl*")) for line in path.open()]


def test_payload_log_under_load_loses_nothing_while_the_writer_keeps_up(tmp_path):
    logs = tmp_path / "payloads"
    # Rotated at 50 KB: a slow run on a busy machine answered 1,024 requests, under 1 MB per worker.
    env = {"NNSERVE_PAYLOAD_LOG_DIR": str(logs), "NNSERVE_PAYLOAD_LOG_MAX_BYTES": "50000",
           "NNSERVE_PAYLOAD_LOG_MAX_FILES": "1000"}  # fmt: skip
    with bentoml_serve(MODELS, **env) as url:
        answered, written, dropped = _load(url, tmp_path, users=4)
    entries = _entries(logs)
    print(f"answered {answered:.0f}, written {written:.0f}, dropped {dropped:.0f}")
    assert answered > 500 and dropped == 0 and written == answered == len(entries)
    assert len({p.name.split(".")[0] for p in logs.glob("payloads-*")}) == 2  # one file (and its rotations) per worker
    assert any(p.suffix == ".1" for p in logs.glob("payloads-*"))  # rotated
    routes = {e["route"] for e in entries}
    assert {"/v1/housing-price/predict", "/v1/ad-click/predict-batch", "/v1/image-tagging/predict"} <= routes
    house = next(e for e in entries if e["route"] == "/v1/housing-price/predict")
    assert (
        house["model"] == "housing-price"
        and house["version"] == "1"
        and re.fullmatch(r"[0-9a-f]{16}", house["request_id"])
    )
    assert house["request"][0]["sqft_living"] > 0 and house["answer"]["price"] > 0 and "warnings" in house["answer"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", house["time"])
    photo = next(e for e in entries if e["route"] == "/v1/image-tagging/predict")
    assert photo["request"]["photo_bytes"][0] > 0 and photo["answer"]["tags"]  # sizes, not pixels


def test_a_writer_that_falls_behind_drops_and_counts_and_never_blocks(tmp_path):
    logs = tmp_path / "payloads"
    with bentoml_serve(MODELS, NNSERVE_PAYLOAD_LOG_DIR=str(logs), NNSERVE_PAYLOAD_LOG_QUEUE="1") as url:
        answered, written, dropped = _load(url, tmp_path, users=8)  # Locust's SLO: no failed request
    print(f"answered {answered:.0f}, written {written:.0f}, dropped {dropped:.0f}")
    assert dropped > 0 and written + dropped == answered and len(_entries(logs)) == written
