"""Model versions: versions on disk and their policy, pinned routes, load-check-warm-swap in every
worker of a real `bentoml serve`, broken versions refused while the old one serves, Triton's
repository API through tritonclient, canary and shadow, management behind its switch and the keys.

The server's models directory is a temporary copy: housing-price in the versioned layout (folders
1, 2, ...; version 2 answers 1.1 times version 1, its graph scaled), ad-click in the flat one."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
from pathlib import Path

import httpx
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from loadtests.serving import add_version, bentoml_serve, everywhere, metrics_containing, server_log
from service.settings import Settings
from service.worker import Worker, standalone
from tests.conftest import MODELS
from tests.integration.test_faults import HOUSE

HOUSING = "/v1/housing-price/predict"


def _models(tmp: Path) -> Path:
    models = tmp / "models"
    add_version(models / "housing-price", MODELS / "housing-price", "1")
    shutil.copytree(MODELS / "ad-click", models / "ad-click")
    return models


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    models = _models(tmp_path_factory.mktemp("versions"))
    env = {"NNSERVE_MODEL_POLL_S": "0.3", "NNSERVE_MANAGEMENT": "true", "NNSERVE_WORKERS": "2"}
    with bentoml_serve(models, **env) as url:
        yield url, models


def _set_policy(url: str, policy: dict) -> dict:
    r = httpx.put(url + "/v1/models/housing-price/policy", json=policy)
    assert r.status_code == 200, r.text
    return r.json()


def _reset(url: str, models: Path) -> None:
    """Back to version 1 alone, on every worker."""
    _set_policy(url, {})
    for extra in [p for p in (models / "housing-price").iterdir() if p.name != "1"]:
        shutil.rmtree(extra)
    everywhere(url, lambda h: h["models"]["housing-price"]["versions"] == ["1"] and not h["refused"])


def test_a_new_version_is_swapped_in_on_every_worker_and_each_version_has_its_routes(served):
    url, models = served
    _reset(url, models)
    before = httpx.post(url + HOUSING, json=HOUSE).json()
    assert before["version"] == "1"
    _set_policy(url, {"versions": {"latest": 2}})
    add_version(models / "housing-price", MODELS / "housing-price", "2", scale=1.1)
    everywhere(url, lambda h: h["models"]["housing-price"]["versions"] == ["2", "1"])
    after = httpx.post(url + HOUSING, json=HOUSE).json()
    assert after["version"] == "2" and after["price"] == pytest.approx(before["price"] * 1.1, rel=1e-5)
    pinned = httpx.post(url + "/v1/housing-price/versions/1/predict", json=HOUSE).json()
    assert pinned["version"] == "1" and pinned["price"] == before["price"]
    batch = httpx.post(url + "/v1/housing-price/versions/1/predict-batch", json={"houses": [HOUSE]}).json()
    assert batch["version"] == "1"
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.get_model_metadata("housing-price")["versions"] == ["2", "1"]
    assert client.is_model_ready("housing-price", "1") and not client.is_model_ready("housing-price", "7")
    oip = httpx.get(url + "/v2/models/housing-price/versions/1").json()
    assert oip["versions"] == ["2", "1"] and oip["name"] == "housing-price"
    # Back to "latest": version 1 is retired on every worker, and its pinned route says so.
    _set_policy(url, {})
    everywhere(url, lambda h: h["models"]["housing-price"]["versions"] == ["2"])
    gone = httpx.post(url + "/v1/housing-price/versions/1/predict", json=HOUSE)
    assert gone.status_code == 404 and gone.json()["detail"][0]["loc"] == ["version"]
    assert httpx.post(url + "/v1/housing-price/versions/1/predict", json=HOUSE).status_code == 404
    assert httpx.post(url + "/v2/models/housing-price/versions/1/infer", json={"inputs": []}).status_code == 404
    for _ in range(4):  # whichever worker answers /metrics: a retired version's series are gone from it
        metrics = httpx.get(url + "/metrics", headers={"Connection": "close"}).text
        retired = [line for line in metrics.splitlines() if line.startswith("nnserve_")
                   and 'model="housing-price"' in line and 'version="1"' in line]  # fmt: skip
        assert not retired, retired[:5]
        assert 'model="housing-price",provider="CPUExecutionProvider",version="2"} 1.0' in metrics


def test_a_broken_version_is_refused_logged_once_and_the_old_one_keeps_serving(served):
    url, models = served
    _reset(url, models)
    broken = add_version(models / "housing-price", MODELS / "housing-price", "3", breakage="sha")
    everywhere(url, lambda h: h["refused"] == {"housing-price": ["3"]})
    health = httpx.get(url + "/readyz")
    assert health.status_code == 200 and health.json()["models"]["housing-price"]["versions"] == ["1"]
    assert httpx.post(url + HOUSING, json=HOUSE).json()["version"] == "1"
    metrics = metrics_containing(url, 'nnserve_model_refused{model="housing-price",version="3"} 1.0')
    assert 'nnserve_model_refused{model="housing-price",version="3"} 1.0' in metrics
    lines = [line for line in server_log(url).read_text().splitlines() if str(broken / "model.onnx") in line]
    assert len(lines) == 2 and all("sha256" in line for line in lines), lines  # once per worker, not per look
    # Fixed in place (a new copy, whole): served, and no longer refused.
    shutil.rmtree(broken)
    add_version(models / "housing-price", MODELS / "housing-price", "3")
    everywhere(url, lambda h: h["models"]["housing-price"]["versions"] == ["3"] and not h["refused"])
    assert 'nnserve_model_refused{model="housing-price",version="3"} 0.0' in metrics_containing(
        url, 'nnserve_model_refused{model="housing-price",version="3"} 0.0'
    )


def test_tritonclient_repository_index_load_and_unload(served):
    url, models = served
    _reset(url, models)
    add_version(models / "housing-price", MODELS / "housing-price", "2", breakage="onnx")
    everywhere(url, lambda h: h["refused"] == {"housing-price": ["2"]})
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index()}
    assert index[("housing-price", "1")]["state"] == "READY" and index[("ad-click", "1")]["state"] == "READY"
    assert index[("housing-price", "2")]["state"] == "UNAVAILABLE"
    assert "onnxruntime cannot load it" in index[("housing-price", "2")]["reason"]

    client.unload_model("ad-click")
    everywhere(url, lambda h: "ad-click" not in h["models"] and h["ready"])
    assert not client.is_model_ready("ad-click")
    r = httpx.post(url + "/v1/ad-click/predict", json={"user_age": 30})
    assert r.status_code == 404 and "unloaded" in r.json()["error"]
    client.load_model("ad-click")
    everywhere(url, lambda h: "ad-click" in h["models"])
    assert client.is_model_ready("ad-click")
    with pytest.raises(InferenceServerException, match="no model nope"):
        client.load_model("nope")
    with pytest.raises(InferenceServerException, match="not supported"):
        client.load_model("ad-click", config=json.dumps({"backend": "onnxruntime"}))


def test_canary_is_sticky_by_request_key_then_promoted_then_rolled_back(served):
    url, models = served
    _reset(url, models)
    add_version(models / "housing-price", MODELS / "housing-price", "2", scale=1.1)
    state = _set_policy(url, {"default": "1", "canary": {"version": "2", "weight": 30}})
    assert state["serving"] == {"versions": ["2", "1"], "default": "1", "canary": {"version": "2", "weight": 30.0}}
    everywhere(url, lambda h: h["models"]["housing-price"].get("canary", {}).get("version") == "2")
    with httpx.Client(base_url=url) as client:
        seen = {}
        for i in range(200):
            key = {"X-Request-Key": f"user-{i}"}
            versions = {client.post(HOUSING, json=HOUSE, headers=key).json()["version"] for _ in range(3)}
            assert len(versions) == 1, f"user-{i} saw {versions}"
            seen[i] = versions.pop()
        share = sum(v == "2" for v in seen.values()) / len(seen)
        assert 0.15 < share < 0.45, share
        # OIP inference takes the same draw for the same key.
        infer = {"inputs": _oip_inputs(client)}
        for i in range(20):
            key = {"X-Request-Key": f"user-{i}"}
            assert (
                client.post("/v2/models/housing-price/infer", json=infer, headers=key).json()["model_version"]
                == seen[i]
            )
    answered = metrics_containing(url, 'nnserve_predictions_total{model="housing-price",status="200",version="2"}')
    assert 'nnserve_predictions_total{model="housing-price",status="200",version="1"}' in answered  # per version
    _set_policy(url, {"default": "2"})  # promote
    everywhere(url, lambda h: h["models"]["housing-price"]["versions"] == ["2"])
    assert {httpx.post(url + HOUSING, json=HOUSE).json()["version"] for _ in range(20)} == {"2"}
    _set_policy(url, {"default": "1"})  # roll back: one call
    everywhere(url, lambda h: h["models"]["housing-price"]["default"] == "1")
    assert {httpx.post(url + HOUSING, json=HOUSE).json()["version"] for _ in range(20)} == {"1"}


def _oip_inputs(client: httpx.Client) -> list[dict]:
    meta = client.get("/v2/models/housing-price").json()
    numeric, categorical = meta["inputs"]
    return [
        {"name": numeric["name"], "datatype": "FP32", "shape": [1, numeric["shape"][1]],
         "data": [0.5] * numeric["shape"][1]},
        {"name": categorical["name"], "datatype": "INT64", "shape": [1, categorical["shape"][1]],
         "data": [98103] * categorical["shape"][1]},
    ]  # fmt: skip


def test_a_shadow_runs_on_sampled_requests_and_only_its_difference_is_kept(served):
    url, models = served
    _reset(url, models)
    add_version(models / "housing-price", MODELS / "housing-price", "2", scale=1.1)
    _set_policy(url, {"default": "1", "shadow": {"version": "2", "sample": 1.0}})
    everywhere(url, lambda h: h["models"]["housing-price"].get("shadow", {}).get("version") == "2")
    answers = [httpx.post(url + HOUSING, json=HOUSE).json() for _ in range(30)]
    assert {a["version"] for a in answers} == {"1"}
    labels = 'measure="absolute_difference",model="housing-price",shadow_version="2",version="1"'
    text = metrics_containing(url, f"nnserve_shadow_difference_count{{{labels}}} 30.0", deadline_s=15)
    count = float(text.split(f"nnserve_shadow_difference_count{{{labels}}} ")[1].split()[0])
    total = float(text.split(f"nnserve_shadow_difference_sum{{{labels}}} ")[1].split()[0])
    assert count == 30  # every request, once: sample 1.0
    assert total / count == pytest.approx(answers[0]["price"] * 0.1, rel=1e-3)  # version 2 answers 1.1x


# --- in-process: every kind of broken version, and management's switch and keys --------------------------
@pytest.mark.parametrize(
    ("breakage", "scale", "message"),
    [
        ("onnx", None, "onnxruntime cannot load it"),
        ("sha", None, "sha256"),
        ("graph", None, "as its card's features say; the graph takes"),
        ("", math.nan, "smoke prediction on the card's example row gave nan"),
        ("task", None, "smoke prediction on the card's example row gave"),
    ],
)
def test_every_kind_of_broken_version_is_refused_and_the_old_one_serves(tmp_path, caplog, breakage, scale, message):
    models = _models(tmp_path)
    worker = Worker(Settings(models_dir=models))
    registry = worker.registry
    add_version(models / "housing-price", MODELS / "housing-price", "2", scale=scale, breakage=breakage)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        for _ in range(3):  # the watch looks again and again: the refusal is said once
            registry.apply(registry.planner.plan(registry.table))
    assert registry.ready and registry.adapters["housing-price"].model.card.version == "1"
    assert worker.health()["refused"] == {"housing-price": ["2"]}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and message in lines[0] and str(models / "housing-price" / "2") in lines[0], lines


def test_a_version_that_vanishes_for_one_look_keeps_serving_and_goes_at_the_second(tmp_path):
    models = _models(tmp_path)
    worker = Worker(Settings(models_dir=models))
    registry = worker.registry
    (models / "ad-click").rename(models / ".ad-click.previous")  # a flat folder being replaced by renames
    registry.apply(registry.planner.plan(registry.table))
    assert "ad-click" in registry.adapters and registry.ready
    (models / ".ad-click.previous").rename(models / "ad-click")  # back: served all along
    registry.apply(registry.planner.plan(registry.table))
    assert "ad-click" in registry.adapters
    shutil.rmtree(models / "ad-click")  # really removed: gone at the second look
    registry.apply(registry.planner.plan(registry.table))
    assert "ad-click" in registry.adapters
    registry.apply(registry.planner.plan(registry.table))
    assert "ad-click" not in registry.adapters


def test_management_is_off_by_default_and_behind_the_keys_when_on_the_index_is_read_only(tmp_path):
    models = _models(tmp_path)
    repository = "/v2/repository"
    calls = [
        ("PUT", "/v1/models/housing-price/policy", {"default": "1"}),
        ("POST", f"{repository}/index", {}),
        ("POST", f"{repository}/models/ad-click/unload", {}),
        ("POST", f"{repository}/models/ad-click/load", {}),
    ]

    async def statuses(settings: Settings, headers: dict) -> list[int]:
        transport = httpx.ASGITransport(app=standalone(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
            return [(await client.request(m, path, json=body)).status_code for m, path, body in calls]

    # The index is read-only: open without the setting (as Triton's is); changes are not.
    assert asyncio.run(statuses(Settings(models_dir=models), {})) == [403, 200, 403, 403]
    keyed = Settings(models_dir=models, management=True, api_keys="k")
    assert asyncio.run(statuses(keyed, {})) == [401] * 4
    assert asyncio.run(statuses(keyed, {"X-API-Key": "k"})) == [200] * 4
    assert json.loads((models / "policy.json").read_text()) == {"housing-price": {"default": "1"}}


BAD_POLICIES = [
    ({"canary": {"version": "9", "weight": 5}}, ["canary"], "one of the versions on disk ['1']"),
    ({"versions": "sometimes"}, ["versions", "name"], "Input should be 'latest' or 'all'"),
    ({"versions": {"latest": 0}}, ["versions", "latest", "latest"], "greater than or equal to 1"),
    ({"versions": 5}, ["versions"], '"latest", "all", {"latest": N} or {"specific": ["<version>", ...]}'),
    ({"versions": {"newest": 2}}, ["versions"], '"latest", "all", {"latest": N} or {"specific": ["<version>", ...]}'),
    ({"unloaded": "yes"}, ["unloaded"], "valid boolean"),  # not read as true: that would unload the model
    ({"versions": {"latest": "2"}}, ["versions", "latest", "latest"], "valid integer"),
]


@pytest.mark.parametrize("policy, loc, msg", BAD_POLICIES, ids=[str(p) for p, _, _ in BAD_POLICIES])
def test_a_bad_policy_is_one_400_naming_the_field_and_changes_nothing(tmp_path, policy, loc, msg):
    models = _models(tmp_path)
    transport = httpx.ASGITransport(app=standalone(Settings(models_dir=models, management=True)))

    async def put() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.put("/v1/models/housing-price/policy", json=policy)

    r = asyncio.run(put())
    assert r.status_code == 400 and len(r.json()["detail"]) == 1, r.text
    assert r.json()["detail"][0]["loc"] == loc and msg in r.json()["detail"][0]["msg"], r.text
    assert not (models / "policy.json").exists()


def test_the_repository_index_takes_ready_as_a_boolean_only(tmp_path):
    models = _models(tmp_path)
    add_version(models / "housing-price", MODELS / "housing-price", "2", breakage="onnx")
    transport = httpx.ASGITransport(app=standalone(Settings(models_dir=models, management=True)))

    async def index(body: dict) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/v2/repository/index", json=body)

    everything, ready, truthy = (asyncio.run(index(b)) for b in ({}, {"ready": True}, {"ready": "x"}))
    assert {e["state"] for e in everything.json()} == {"READY", "UNAVAILABLE"}
    assert ready.status_code == 200 and {e["state"] for e in ready.json()} == {"READY"}
    assert truthy.status_code == 400 and '"ready" must be true or false' in truthy.json()["error"]
