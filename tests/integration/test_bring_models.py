"""Models trained with the libraries tabular teams use, brought as ONNX files with a schema file: a
scikit-learn pipeline (one-hot ZIP code + gradient-boosted trees) on the King County sales, exported by
skl2onnx with one input per column, and a LightGBM click model, exported by onnxmltools with one float
input. Each is made by its docs/examples script, carded by `python -m training.make_card --publish`
with its held-out file, and served by a real `bentoml serve`: the answers equal the library's own
predict / predict_proba; the Open Inference Protocol, drift and the payload log work for them as for ours."""

from __future__ import annotations

import runpy
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests.serving import bentoml_serve
from tests.conftest import REPO
from training import payload_data
from training.data_tabular import read_tabular_csv
from training.model_schema import read_schema

EXAMPLES = REPO / "docs" / "examples"
HOUSES = 60


def _publish(onnx: Path, schema: Path, data: Path, models: Path) -> None:
    command = [sys.executable, "-m", "training.make_card", "--onnx", str(onnx), "--schema", str(schema), "--data",
               str(data), "--publish", "--models-dir", str(models), "--out", str(onnx.parent / "card")]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bar held: published" in done.stdout


@pytest.fixture(scope="module")
def brought(tmp_path_factory):
    work, models, logs = (tmp_path_factory.mktemp(n) for n in ("work", "models", "logs"))
    housing = runpy.run_path(str(EXAMPLES / "housing_sklearn.py"))
    pipeline, _, held_out = housing["fit"]()
    housing["export"](pipeline, work / "housing" / "model.onnx")
    held_csv = housing["write_rows"](held_out, work / "housing" / "held_out.csv")
    _publish(work / "housing" / "model.onnx", EXAMPLES / "housing_gbm.toml", held_csv, models)

    clicks = runpy.run_path(str(EXAMPLES / "clicks_lightgbm.py"))
    booster, _, last = clicks["fit"](rows=60_000)
    clicks["export"](booster, work / "clicks" / "model.onnx")
    clicks["write_csv"](last, work / "clicks" / "held_out.csv")
    _publish(
        work / "clicks" / "model.onnx", EXAMPLES / "clicks_lightgbm.toml", work / "clicks" / "held_out.csv", models
    )
    with bentoml_serve(models, NNSERVE_PAYLOAD_LOG_DIR=str(logs)) as url:
        yield {"url": url, "logs": logs, "models": models, "housing": housing, "pipeline": pipeline,
               "houses": held_out[:HOUSES], "clicks": clicks, "booster": booster, "last": last}  # fmt: skip


def _house(row: dict) -> dict:
    """A sale of the file as a client sends it."""
    names = ["sqft_living", "bedrooms", "bathrooms", "sqft_lot", "floors", "waterfront", "view", "condition",
             "grade", "yr_built", "yr_renovated", "sqft_basement"]  # fmt: skip
    house = {n: float(row[n]) if n in ("bathrooms", "floors") else int(float(row[n])) for n in names}
    day = row["date"][:8]
    return house | {"sale_date": f"{day[:4]}-{day[4:6]}-{day[6:]}", "zipcode": row["zipcode"]}


def test_the_scikit_learn_pipeline_answers_what_its_predict_answers(brought):
    houses = [_house(r) for r in brought["houses"]]
    r = httpx.post(brought["url"] + "/v1/housing-gbm/predict-batch", json={"rows": houses}, timeout=30)
    assert r.status_code == 200, r.text
    served = np.array([p["price"] for p in r.json()["predictions"]])
    expected = brought["pipeline"].predict(brought["housing"]["frame"](houses))
    assert np.max(np.abs(served - expected) / expected) < 1e-5
    one = httpx.post(brought["url"] + "/v1/housing-gbm/predict", json=houses[0]).json()
    assert one["model"] == "housing-gbm" and abs(one["price"] - expected[0]) / expected[0] < 1e-5
    bad = httpx.post(brought["url"] + "/v1/housing-gbm/predict", json=houses[0] | {"zipcode": "12345"})
    assert bad.status_code == 400 and "zipcode" in bad.text  # outside the declared vocabulary


def test_the_lightgbm_model_answers_what_its_predict_proba_answers(brought):
    last, table = brought["last"], brought["clicks"]["table"]
    genders, devices = ("unknown", "female", "male"), ("mobile", "desktop", "tablet")
    categories = read_schema(EXAMPLES / "clicks_lightgbm.toml").spec.categorical[2].values
    x = table(last)[:200]
    rows = [{"age": int(v[0]), "gender": genders[int(v[1])], "device": devices[int(v[2])],
             "category": categories[int(v[3])], "hour": int(v[4]), "day_of_week": int(v[5]),
             "advertiser_id": int(v[6]), "site_id": int(v[7])} for v in x]  # fmt: skip
    r = httpx.post(brought["url"] + "/v1/ad-click-lgbm/predict-batch", json={"rows": rows}, timeout=30)
    assert r.status_code == 200, r.text
    served = np.array([p["click_probability"] for p in r.json()["predictions"]])
    assert np.max(np.abs(served - brought["booster"].predict_proba(x)[:, 1])) < 1e-5


def test_the_open_inference_protocol_takes_a_brought_graphs_own_inputs_strings_included(brought):
    houses = [_house(r) for r in brought["houses"][:5]]
    frame = brought["housing"]["frame"](houses)
    inputs = [{"name": c, "datatype": "FP32", "shape": [5, 1], "data": frame[c].astype(float).tolist()}
              for c in frame.columns if c != "zipcode"]  # fmt: skip
    inputs.append({"name": "zipcode", "datatype": "BYTES", "shape": [5, 1], "data": frame["zipcode"].tolist()})
    r = httpx.post(brought["url"] + "/v2/models/housing-gbm/infer", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    expected = brought["pipeline"].predict(frame)
    assert np.max(np.abs(np.array(r.json()["outputs"][0]["data"]) - expected) / expected) < 1e-5
    meta = httpx.get(brought["url"] + "/v2/models/housing-gbm").json()
    assert {"name": "zipcode", "datatype": "BYTES", "shape": [-1, 1]} in meta["inputs"]
    inputs[-1]["data"] = [1, 2, 3, 4, 5]
    assert httpx.post(brought["url"] + "/v2/models/housing-gbm/infer", json={"inputs": inputs}).status_code == 400


def test_drift_and_the_payload_log_work_for_a_brought_model(brought, tmp_path):
    url, rows = brought["url"], brought["houses"]
    houses, prices = [_house(r) for r in rows], [float(r["price"]) for r in rows]
    ids = []
    for house in houses:
        r = httpx.post(url + "/v1/housing-gbm/predict", json=house)
        assert r.status_code == 200
        ids.append(r.headers["x-bentoml-request-id"])
    for request_id, price in zip(ids, prices, strict=True):
        for _ in range(100):  # the payload log's writer records predictions in its own thread
            r = httpx.post(url + "/v1/housing-gbm/feedback", json={"request_id": request_id, "outcome": price})
            if r.status_code != 404:
                break
            time.sleep(0.05)
        assert r.status_code == 200, r.text
    drift = httpx.get(url + "/v1/models/housing-gbm/drift").json()["versions"]["1"]
    assert drift["rows"] >= len(houses) and "sqft_living" in drift["distributions"]

    out = tmp_path / "logged.csv"
    model = brought["models"] / "housing-gbm"
    deadline = time.monotonic() + 10
    while True:  # every entry on disk
        if payload_data.main(["--logs", str(brought["logs"]), "--model", str(model), "--out", str(out)]) == 0:
            back = read_tabular_csv(out, read_schema(EXAMPLES / "housing_gbm.toml").spec, {"price": float})
            if len(back) >= len(houses) or time.monotonic() > deadline:
                break
        time.sleep(0.2)
    assert len(back) == len(houses)
    spec = read_schema(EXAMPLES / "housing_gbm.toml").spec
    sent = read_tabular_csv(brought["housing"]["write_rows"](rows, tmp_path / "sent.csv"), spec, {"price": float})
    order = np.lexsort([sent.extra["price"], sent.numeric[:, 0]])
    again = np.lexsort([back.extra["price"], back.numeric[:, 0]])
    assert np.array_equal(back.numeric[again], sent.numeric[order])
    assert np.array_equal(back.categorical[again], sent.categorical[order])
