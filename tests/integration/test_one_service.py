"""Two workers answer as one service (a real `bentoml serve`, 2 workers): drift over every worker's rows
from either worker, and the alert naming only what drifted; a management call done on every worker
when it returns; feedback joined right after its prediction's answer."""

from __future__ import annotations

import httpx
import pytest
import tritonclient.http as triton

from loadtests.payloads import houses
from loadtests.prometheus import poll, start_prometheus
from loadtests.serving import add_version, bentoml_serve
from tests.conftest import MODELS
from tests.integration.test_http import HOUSE

ENV = {"NNSERVE_WORKERS": "2", "NNSERVE_MANAGEMENT": "true", "NNSERVE_MODEL_POLL_S": "30"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    models = tmp_path_factory.mktemp("one") / "models"
    add_version(models / "housing-price", MODELS / "housing-price", "1")
    add_version(models / "housing-price", MODELS / "housing-price", "2", scale=1.1)
    (models / "policy.json").write_text('{"housing-price": {"versions": "all", "default": "1"}}')
    logs = tmp_path_factory.mktemp("payloads")
    with bentoml_serve(models, NNSERVE_PAYLOAD_LOG_DIR=str(logs), **ENV) as url:
        yield url


def per_worker(url: str) -> dict[str, httpx.Client]:
    """A keep-alive client bound to each of the two workers (a connection stays with the worker that
    accepted it; new ones until both are found)."""
    clients: dict[str, httpx.Client] = {}
    for _ in range(200):
        client = httpx.Client(base_url=url, timeout=30)
        pid = client.get("/v1/health").headers["x-nnserve-worker"]
        if pid in clients:
            client.close()
        else:
            clients[pid] = client
        if len(clients) == 2:
            return clients
    raise AssertionError(f"found only workers {list(clients)}")


def test_drift_is_the_services_over_every_workers_rows_and_the_alert_names_what_drifted(served, tmp_path):
    busy, idle = per_worker(served).values()
    shifted = [{**h, "sqft_living": int(min(h["sqft_living"] * 1.4, 13_000))} for h in houses()[:1400]]
    for i in range(0, 1400, 100):  # 1,400 rows to one worker: only sqft_living moved (PSI ~0.5, the price ~0.08)
        assert busy.post("/v1/housing-price/versions/1/predict-batch", json={"houses": shifted[i : i + 100]}).is_success
    for house in shifted[:3]:  # a handful to the other: alone, a 3-row window would call much else drifted
        assert idle.post("/v1/housing-price/versions/1/predict", json=house).is_success

    def figures(client: httpx.Client) -> dict:
        return client.get("/v1/models/housing-price/drift").json()["versions"]["1"]

    def both() -> tuple[dict, dict] | None:
        seen = figures(busy), figures(idle)
        return seen if seen[0]["rows"] == seen[1]["rows"] == 1403 else None

    seen_by_busy, seen_by_idle = poll("both workers' figures over all 1,403 rows", both)
    assert seen_by_busy["distributions"] == seen_by_idle["distributions"] and seen_by_busy["workers"] == 2
    assert seen_by_busy["drifted"] == ["sqft_living"]
    prometheus, api = start_prometheus(served.removeprefix("http://"), tmp_path)
    try:
        rule = (MODELS.parent / "deploy" / "prometheus" / "alerts.yml").read_text()
        expr = rule.split("alert: NNServeDrift")[1].split("expr: |")[1].split("for:")[0]
        fired = poll("the drift alert's expression, evaluated on the scraped series", lambda: httpx.get(
            api + "/api/v1/query", params={"query": expr}).json()["data"]["result"])  # fmt: skip
        assert {r["metric"]["distribution"] for r in fired if r["metric"]["version"] == "1"} == {"sqft_living"}
    finally:
        prometheus.terminate()
        prometheus.wait(30)
    for client in (busy, idle):
        client.close()


def test_an_unloaded_model_is_not_ready_on_any_worker_as_soon_as_the_call_returns(served):
    client = triton.InferenceServerClient(served.removeprefix("http://"))
    try:
        client.unload_model("housing-price")
        ready = [client.is_model_ready("housing-price") for _ in range(100)]  # new connections: both workers
        assert not any(ready), f"{sum(ready)} of 100 still ready"
        client.load_model("housing-price")
        assert all(client.is_model_ready("housing-price") for _ in range(100))
    finally:
        client.load_model("housing-price")
        client.close()


def test_a_canary_set_by_a_call_answers_the_very_next_request_on_every_worker(served):
    workers = per_worker(served)
    try:
        for weight, version in ((100, "2"), (0, "1")):
            policy = {"versions": "all", "default": "1", "canary": {"version": "2", "weight": weight}}
            put = httpx.put(served + "/v1/models/housing-price/policy", json=policy)
            assert put.status_code == 200, put.text
            for client in workers.values():
                assert client.post("/v1/housing-price/predict", json=HOUSE).json()["version"] == version
    finally:
        httpx.put(served + "/v1/models/housing-price/policy", json={"versions": "all", "default": "1"})
        for client in workers.values():
            client.close()


def test_feedback_right_after_its_answer_is_joined_every_time(served):
    with httpx.Client(base_url=served, timeout=30) as client:
        statuses = []
        for i in range(1000):
            answer = client.post("/v1/housing-price/predict", json={**HOUSE, "bedrooms": 1 + i % 6})
            request_id = answer.headers["x-bentoml-request-id"]
            feedback = client.post("/v1/housing-price/feedback", json={"request_id": request_id, "outcome": 500_000})
            statuses.append(feedback.status_code)
    assert statuses.count(200) == 1000, {s: statuses.count(s) for s in set(statuses)}
