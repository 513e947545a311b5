"""A short `make loadtest` run: Locust against the real server, reports written, no failed request."""

from __future__ import annotations

import csv

import pytest

from loadtests.run import main

pytestmark = pytest.mark.alone  # Locust's load: no other test beside it (tests/conftest.py)


def test_a_15_second_loadtest_has_no_failures(server, tmp_path, capsys):
    slo = tmp_path / "slo.toml"
    slo.write_text("max_failure_ratio = 0.0\n")  # latency is the benchmark's business, not a test's
    assert (
        main(["--url", server, "--duration", "15", "--users", "4", "--slo", str(slo), "--reports", str(tmp_path)]) == 0
    )
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run / "report.html").stat().st_size > 10_000
    with open(run / "locust_stats.csv", newline="") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    for route in ("/v1/housing-price/predict", "/v1/ad-click/predict-batch", "/v1/image-tagging/predict"):
        assert int(rows[route]["Request Count"]) > 0 and int(rows[route]["Failure Count"]) == 0, route
    printed = capsys.readouterr().out
    assert "server side" in printed and "/v1/housing-price/predict " in printed and "SLO held" in printed
