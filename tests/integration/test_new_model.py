"""A fourth tabular model, of a schema none of ours has, served by adding its folder: no code.

It is trained here (3 numeric features, a closed set of strings, an integer ID), exported with its
card, dropped into a temporary models directory beside our three, and served by a real `bentoml
serve`: typed endpoints (single and batch), OpenAPI, metadata, the Open Inference Protocol and
BentoML's client, good and bad input, every answer checked against onnxruntime run directly."""

from __future__ import annotations

import shutil

import bentoml
import httpx
import numpy as np
import onnxruntime as ort
import pytest

from loadtests.serving import bentoml_serve
from tests.conftest import MODELS
from training.contract import Categorical, Numeric, TabularSpec
from training.data_tabular import TabularData
from training.runinfo import TrainingDataError
from training.tabular import train_tabular

WEATHER = ("clear", "rain", "snow")
SPEC = TabularSpec(
    name="delivery-time",
    task="regression",
    description="Minutes from order to door for a food delivery.",
    numeric=(
        Numeric("distance_km", "Road distance from the kitchen.", "km", 0, 50, 3.5),
        Numeric("items", "Dishes in the order.", "count", 1, 30, 2, default=1, integer=True),
        Numeric("temperature_c", "Outside temperature.", "degrees C", -30, 45, 15, default=15),
    ),
    categorical=(
        Categorical("weather", "Weather at the time of the order.", "clear", values=WEATHER, default="clear"),
        Categorical("courier_id", "The courier (an ID).", 12, minimum=0, maximum=99_999),
    ),
    output="minutes",
    output_unit="minutes",
)


def _orders(n: int, seed: int) -> TabularData:
    rng = np.random.default_rng(seed)
    distance = rng.uniform(0.2, 12, n)
    items = rng.integers(1, 8, n)
    temperature = rng.uniform(-5, 30, n)
    weather = rng.integers(0, 3, n)
    courier = rng.integers(0, 40, n)
    minutes = 12 + 3.1 * distance + 0.8 * items + np.array([0, 6, 15])[weather] + 0.1 * courier + rng.normal(0, 2, n)
    numeric = np.stack([distance, items, temperature], axis=1).astype(np.float32)
    codes = np.stack([weather, courier], axis=1).astype(np.int64)
    return TabularData(numeric, codes, {"minutes": minutes})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    shutil.copytree(MODELS / "ad-click", models / "ad-click")  # beside one of ours
    card = train_tabular(SPEC, _orders(3_000, 0), _orders(500, 1), "minutes", epochs=15, publish=True,
                         models_dir=models, out=models.parent / "run")  # fmt: skip
    assert card.metrics["model"]["r2"] > 0.8  # it learned something worth serving
    assert not card.bar_failed() and card.metrics["baseline"]["r2"] < 0.01  # the constant baseline: the mean
    assert card.reference is not None and card.training["layout"]["label"] == "minutes" and card.data is not None
    with bentoml_serve(models) as url:
        yield url, ort.InferenceSession(str(models / "delivery-time" / "model.onnx"))


ORDER = {"distance_km": 4.2, "items": 3, "temperature_c": 21.5, "weather": "rain", "courier_id": 7}


def _direct(session, order: dict) -> float:
    numeric = np.array([[order["distance_km"], order.get("items", 1), order.get("temperature_c", 15)]], np.float32)
    codes = np.array([[WEATHER.index(order.get("weather", "clear")), order["courier_id"]]], np.int64)
    return float(session.run(None, {"numeric": numeric, "categorical": codes})[0][0, 0])


def test_its_typed_endpoints_answer_what_onnxruntime_answers(served):
    url, session = served
    r = httpx.post(url + "/v1/delivery-time/predict", json=ORDER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "delivery-time" and body["version"] == "1" and body["warnings"] == []
    assert body["minutes"] == pytest.approx(_direct(session, ORDER), rel=1e-6)
    minimal = {"distance_km": 1.0, "courier_id": 3}  # defaults for the rest
    rows = [ORDER, minimal, {**ORDER, "courier_id": 99_000}]
    batch = httpx.post(url + "/v1/delivery-time/predict-batch", json={"rows": rows}).json()["predictions"]
    assert [p["minutes"] for p in batch] == pytest.approx([_direct(session, o) for o in rows], rel=1e-6)
    assert [w["field"] for w in batch[2]["warnings"]] == ["courier_id"]  # an unseen ID: served, with a warning


@pytest.mark.parametrize(
    ("order", "loc"),
    [
        ({**ORDER, "weather": "hail"}, ["weather"]),
        ({k: v for k, v in ORDER.items() if k != "distance_km"}, ["distance_km"]),
        ({**ORDER, "distance_km": 80}, ["distance_km"]),
        ({**ORDER, "tip": 2}, ["tip"]),
        ({**ORDER, "items": "three"}, ["items"]),
    ],
)
def test_bad_input_is_a_400_naming_the_field(served, order, loc):
    r = httpx.post(served[0] + "/v1/delivery-time/predict", json=order)
    assert r.status_code == 400 and loc in [d["loc"] for d in r.json()["detail"]], r.text


def test_its_openapi_entry_metadata_oip_route_and_client_method(served):
    url, session = served
    spec = httpx.get(url + "/docs.json").json()
    assert {"/v1/delivery-time/predict", "/v1/delivery-time/predict-batch"} <= set(spec["paths"])
    request = spec["components"]["schemas"]["DeliveryTimeRequest"]
    assert request["properties"]["weather"]["enum"] == list(WEATHER)
    assert all(p.get("description") and "example" in p for p in request["properties"].values())
    assert set(request["required"]) == {"distance_km", "courier_id"}
    meta = httpx.get(url + "/v1/models/delivery-time").json()
    assert [f["name"] for f in meta["numeric"]] == ["distance_km", "items", "temperature_c"]
    infer = {
        "inputs": [
            {"name": "numeric", "shape": [1, 3], "datatype": "FP32", "data": [4.2, 3, 21.5]},
            {"name": "categorical", "shape": [1, 2], "datatype": "INT64", "data": [1, 7]},
        ]
    }
    oip = httpx.post(url + "/v2/models/delivery-time/infer", json=infer).json()
    assert oip["outputs"][0]["data"][0] == pytest.approx(_direct(session, ORDER), rel=1e-6)
    with bentoml.SyncHTTPClient(url) as client:
        assert client.delivery_time(**ORDER)["minutes"] == pytest.approx(_direct(session, ORDER), rel=1e-6)
        assert len(client.delivery_time_batch(rows=[ORDER, ORDER])["predictions"]) == 2


def test_train_tabular_never_writes_inside_the_served_models_directory(tmp_path):
    models = tmp_path / "models"
    with pytest.raises(TrainingDataError, match="inside the served models directory"):
        train_tabular(SPEC, _orders(600, 0), _orders(100, 1), "minutes", out=models / "x", models_dir=models)
    assert not models.exists()
