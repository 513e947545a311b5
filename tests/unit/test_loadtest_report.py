"""The load test's server-side view from /metrics deltas, and its quantiles."""

from __future__ import annotations

import math

from loadtests.run import _quantile, server_view


def _key(name: str, **labels: str) -> tuple[str, tuple]:
    return name, tuple(sorted(labels.items()))


def test_quantiles_from_cumulative_buckets():
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert _quantile(buckets, 0.5) == 0.01
    assert 0.01 < _quantile(buckets, 0.9) <= 0.1
    assert math.isnan(_quantile([], 0.5)) and math.isnan(_quantile([(1.0, 0.0)], 0.5))


def test_server_view_lists_api_routes_with_new_requests_only():
    route = "/v1/ad-click/predict"
    before = {_key("bentoml_service_request_total", endpoint=route, http_response_code="200"): 10.0}
    after = {
        _key("bentoml_service_request_total", endpoint=route, http_response_code="200"): 30.0,
        _key("bentoml_service_request_total", endpoint="/docs.json", http_response_code="200"): 5.0,
        _key(
            "bentoml_service_request_duration_seconds_bucket", endpoint=route, http_response_code="200", le="0.005"
        ): 20.0,
        _key(
            "bentoml_service_request_duration_seconds_bucket", endpoint=route, http_response_code="200", le="+Inf"
        ): 20.0,
    }
    lines = server_view(before, after)
    assert any(route in line and "200: 20" in line and "p50" in line for line in lines)
    assert not any("/docs.json" in line for line in lines)


def test_overload_behaviour_is_judged_apart_from_its_figures():
    from loadtests.overload import REFUSED, misbehaviour, over_thresholds

    row = {"Request Count": "100", "Failure Count": "0", "Requests/s": "50", "99%": "9000"}
    capacity = {"Aggregated": {**row, "Requests/s": "60"}}
    slow = {"Aggregated": row, "/v1/housing-price/predict": row, REFUSED: row}
    slo = {"p99_ms": 1000, "max_rss_growth": 0.1, "recover_s": 5}
    # A slow machine: a 9 s p99, memory up 50%, 20 s to recover. Behaviour is fine; the figures are not.
    assert misbehaviour(slow, recovered_s=20) == []
    assert len(over_thresholds(capacity, slow, [100, 150], 20, slo)) == 3
    failing = {**slow, "Aggregated": {**row, "Failure Count": "3"}}
    assert misbehaviour(failing, 1) and misbehaviour({"Aggregated": row}, 1)  # failures; nothing refused
    assert misbehaviour(slow, float("inf"))  # never recovered
