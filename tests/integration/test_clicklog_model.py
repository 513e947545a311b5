"""A click model trained from the Avazu preset, served by adding its folder: no code.

A generated log in the Avazu layout (hex and 64-bit IDs, YYMMDDHH hours) is trained on by the
schema-driven trainer, the model's folder goes into a temporary models directory, and a real
`bentoml serve` answers requests built from raw log lines: the line's fields as they are, the label,
the hour and the row id taken and ignored. Every answer is checked against onnxruntime run on the codes
the trainer read from the same lines, so serving hashes a raw ID exactly as training did."""

from __future__ import annotations

import csv
import gzip

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from loadtests.serving import bentoml_serve
from training import train_adclick
from training.clicklog_data import read_log
from training.clicklog_schema import load_schema
from training.data_adclick import generate
from training.data_clicklogs import write_log

NAME = "ad-click-avazu"
ROWS = 30_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("avazu")
    log_path = write_log(generate(ROWS, seed=3), "avazu", folder / "avazu.csv.gz")
    models = tmp_path_factory.mktemp("models")
    args = ["--schema", "avazu", "--data", str(log_path), "--out", str(models / NAME), "--buckets", "4096",
            "--epochs", "2", "--batch-size", "1024", "--baseline-rows", "10000"]  # fmt: skip
    train_adclick.main(args)  # the bar may fail on 24k rows: the model is served all the same
    with gzip.open(log_path, "rt", newline="") as f:
        lines = list(csv.DictReader(f))
    codes = read_log(log_path, load_schema("avazu").with_buckets(4096), quiet=True)  # in file order, as the lines
    with bentoml_serve(models) as url:
        yield url, lines, codes, ort.InferenceSession(str(models / NAME / "model.onnx"))


def _request(line: dict[str, str]) -> dict[str, str]:
    """A raw log line as a request: every field as the log has it, the row id, the label and the hour
    too (the route takes them and the model reads none of them)."""
    return dict(line)


def _direct(session, codes, rows: list[int]) -> list[float]:
    feeds = {"numeric": codes.numeric[rows], "categorical": codes.codes[rows].astype(np.int64)}
    return session.run(None, feeds)[0][:, 0].tolist()


def test_a_raw_log_line_gets_what_onnxruntime_gives_on_the_trainers_codes(served):
    url, lines, codes, session = served
    row = ROWS - 7  # a held-out line
    r = httpx.post(f"{url}/v1/{NAME}/predict", json=_request(lines[row]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == NAME
    assert body["click_probability"] == pytest.approx(_direct(session, codes, [row])[0], rel=1e-5)
    rows = [0, 1, 2, ROWS // 2, ROWS - 1]
    batch = httpx.post(f"{url}/v1/{NAME}/predict-batch", json={"rows": [_request(lines[i]) for i in rows]})
    assert batch.status_code == 200, batch.text
    got = [p["click_probability"] for p in batch.json()["predictions"]]
    assert got == pytest.approx(_direct(session, codes, rows), rel=1e-5)


def test_ids_may_be_json_numbers_of_any_size_and_unseen_ones_warn(served):
    url, lines, codes, session = served
    line = _request(lines[ROWS - 7])
    as_numbers = {**line, "C14": int(line["C14"]), "C17": int(line["C17"])}  # the same IDs as JSON numbers
    same = httpx.post(f"{url}/v1/{NAME}/predict", json=as_numbers).json()
    assert same["click_probability"] == pytest.approx(_direct(session, codes, [ROWS - 7])[0], rel=1e-5)
    already = {w["field"] for w in same["warnings"]}  # e.g. a device_id seen once in the whole log
    unseen = httpx.post(f"{url}/v1/{NAME}/predict", json={**line, "site_id": "0123abcd", "C14": 2**64 - 1})
    assert unseen.status_code == 200, unseen.text
    assert {w["field"] for w in unseen.json()["warnings"]} == already | {"site_id", "C14"}
    assert "site_id" not in already and "C14" not in already


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"site_id": 1.5}, "site_id"),  # an ID is a string or an integer, never a float
        ({"C14": True}, "C14"),
        ({"clicks": "1"}, "clicks"),  # a field the log does not have
        ({"device_ip": None}, "device_ip"),
    ],
)
def test_bad_ids_are_a_400_naming_the_field(served, change, loc):
    url, lines, _, _ = served
    r = httpx.post(f"{url}/v1/{NAME}/predict", json={**_request(lines[0]), **change})
    assert r.status_code == 400 and [loc] in [d["loc"] for d in r.json()["detail"]], r.text


def test_the_columns_the_model_does_not_read_are_taken_and_change_nothing(served):
    url, lines, codes, session = served
    line = lines[ROWS - 7]
    answers = [httpx.post(f"{url}/v1/{NAME}/predict", json={**line, **other}) for other in
               ({}, {"click": "1", "hour": "14103123", "id": "42"}, {"click": None, "hour": 7, "id": [1]})]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200, 200], answers[-1].text
    assert answers[0].json() == answers[1].json() == answers[2].json()
    without = httpx.post(f"{url}/v1/{NAME}/predict", json={k: v for k, v in line.items() if k not in ("id", "click")})
    assert without.json() == answers[0].json()  # and they may be left out


def test_its_card_metadata_and_openapi_come_from_the_schema(served):
    url = served[0]
    meta = httpx.get(f"{url}/v1/models/{NAME}").json()
    names = [f["name"] for f in meta["categorical"]]
    assert names[:3] == ["C1", "banner_pos", "site_id"] and "click" not in names and "id" not in names
    assert meta["api"]["ignored_fields"] == ["id", "click", "hour"]
    assert meta["categorical"][2]["hashing"]["seen"] == "512 bytes of bucket bitmap (in card.json)"  # 4,096 bits
    request = httpx.get(url + "/docs.json").json()["components"]["schemas"]["AdClickAvazuRequest"]
    assert set(request["properties"]) == set(names) | {"id", "click", "hour"}
    assert request["properties"]["site_id"]["description"]
    assert "ignored" in request["properties"]["click"]["description"]
