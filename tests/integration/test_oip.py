"""The Open Inference Protocol front door: the real tritonclient, and raw HTTP from the protocol text."""

from __future__ import annotations

import gzip
import io
import json
import zlib

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from loadtests.photos import cifar_photos
from loadtests.serving import metrics_containing
from tests.conftest import CIFAR_VAL
from tests.integration.test_http import HOUSE, IMPRESSION, _row
from training.contract import AD_CLICK, CIFAR10_LABELS, HOUSING

HOUSES = [HOUSE, {**HOUSE, "sqft_living": 3000, "zipcode": 98004}, {**HOUSE, "zipcode": 10001}]
IMPRESSIONS = [IMPRESSION, {**IMPRESSION, "device": "desktop", "hour": 3}, {**IMPRESSION, "ad_id": 10**6}]


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(server.removeprefix("http://"))
    yield c
    c.close()


def _tabular(spec, rows):
    pairs = [_row(spec, r) for r in rows]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def _triton_inputs(numeric, codes, binary):
    a = triton.InferInput("numeric", list(numeric.shape), "FP32")
    a.set_data_from_numpy(numeric, binary_data=binary)
    b = triton.InferInput("categorical", list(codes.shape), "INT64")
    b.set_data_from_numpy(codes, binary_data=binary)
    return [a, b]


def _pixels(jpegs):
    return np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "nnserve" and {"binary_tensor_data", "classification"} <= set(meta["extensions"])
    for name in ("housing-price", "ad-click", "image-tagging"):
        assert client.is_model_ready(name) and client.is_model_ready(name, model_version="1")
    assert not client.is_model_ready("nope")
    housing = client.get_model_metadata("housing-price")
    assert housing["inputs"] == [
        {"name": "numeric", "datatype": "FP32", "shape": [-1, 13]},
        {"name": "categorical", "datatype": "INT64", "shape": [-1, 1]},
    ]
    assert housing["outputs"] == [{"name": "price", "datatype": "FP32", "shape": [-1, 1]}]
    assert housing["parameters"]["numeric_columns"] == [f.name for f in HOUSING.numeric]
    tagger = client.get_model_metadata("image-tagging", model_version="1")
    assert tagger["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    assert "decoded RGB pixels" in tagger["parameters"]["input_note"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tabular_infer_equals_the_typed_endpoints(client, server, binary):
    for name, spec, rows, route, key, output in [
        ("housing-price", HOUSING, HOUSES, "/v1/housing-price/predict-batch", "houses", "price"),
        ("ad-click", AD_CLICK, IMPRESSIONS, "/v1/ad-click/predict-batch", "impressions", "click_probability"),
    ]:
        numeric, codes = _tabular(spec, rows)
        result = client.infer(
            name, _triton_inputs(numeric, codes, binary), request_id="r-1",
            outputs=[triton.InferRequestedOutput(output, binary_data=binary)],
        )  # fmt: skip
        got = result.as_numpy(output)
        assert got.shape == (len(rows), 1) and result.get_response()["id"] == "r-1"
        typed = httpx.post(server + route, json={key: rows}).json()["predictions"]
        assert got[:, 0].tolist() == pytest.approx([p[output] for p in typed], rel=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tagger_batch_and_classification_equal_the_typed_endpoint(client, server, binary):
    photos = [jpeg for _, jpeg in cifar_photos(CIFAR_VAL, per_class=1)[:4]]
    pixels = _pixels(photos)
    image = triton.InferInput("image", list(pixels.shape), "UINT8")
    image.set_data_from_numpy(pixels, binary_data=binary)
    probs = client.infer(
        "image-tagging", [image], outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)]
    )
    top3 = client.infer(
        "image-tagging",
        [image],
        outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)],
    ).as_numpy("probabilities")
    files = [("photos", (f"{i}.jpg", p)) for i, p in enumerate(photos)]
    typed = httpx.post(server + "/v1/image-tagging/predict-batch", files=files, data={"top_k": "10"}).json()["results"]
    for row, tags, best in zip(probs.as_numpy("probabilities"), typed, top3, strict=True):
        assert {CIFAR10_LABELS[i]: float(p) for i, p in enumerate(row)} == pytest.approx(
            {t["label"]: t["score"] for t in tags}, abs=1e-6
        )
        parsed = [(x.decode() if isinstance(x, bytes) else x).split(":") for x in best]
        assert [label for _, _, label in parsed] == [t["label"] for t in tags[:3]]
        assert [int(i) for _, i, _ in parsed] == [CIFAR10_LABELS.index(t["label"]) for t in tags[:3]]
        assert [float(s) for s, _, _ in parsed] == pytest.approx([t["score"] for t in tags[:3]], abs=1e-6)


def _raw_request(server, path, body, **headers):
    return httpx.post(server + path, content=body, headers={"content-type": "application/json", **headers})


HOUSE_REQUEST = {
    "id": "42",
    "inputs": [
        {
            "name": "numeric",
            "shape": [1, 13],
            "datatype": "FP32",
            "data": [1800, 3, 2, 7500, 1, 0, 0, 3, 7, 1975, 0, 0, 2015.0822],  # sale date: 2015-01-31
        },
        {"name": "categorical", "shape": [1, 1], "datatype": "INT64", "data": [[98103]]},
    ],
}


def test_raw_json_following_the_protocol_text(server):
    r = _raw_request(server, "/v2/models/housing-price/versions/1/infer", json.dumps(HOUSE_REQUEST))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "42" and body["model_name"] == "housing-price" and body["model_version"] == "1"
    (out,) = body["outputs"]
    assert out["name"] == "price" and out["datatype"] == "FP32" and out["shape"] == [1, 1]
    typed = httpx.post(
        server + "/v1/housing-price/predict",
        json={"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103, "sale_date": "2015-01-31"},  # the OIP row's date
    )
    assert out["data"][0] == pytest.approx(typed.json()["price"], rel=1e-6)
    assert httpx.get(server + "/v2").json()["name"] == "nnserve"
    assert httpx.get(server + "/v2/health/live").status_code == 200
    assert httpx.get(server + "/v2/models/ad-click").json()["inputs"][1]["shape"] == [-1, 9]


def test_raw_binary_request_and_response(server):
    header = {
        "inputs": [
            {"name": "numeric", "shape": [1, 13], "datatype": "FP32", "parameters": {"binary_data_size": 52}},
            {"name": "categorical", "shape": [1, 1], "datatype": "INT64", "parameters": {"binary_data_size": 8}},
        ],
        "outputs": [{"name": "price", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    tensors = np.array(HOUSE_REQUEST["inputs"][0]["data"], "<f4").tobytes() + np.array([98103], "<i8").tobytes()
    r = _raw_request(
        server, "/v2/models/housing-price/infer", head + tensors, **{"Inference-Header-Content-Length": str(len(head))}
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    answer = json.loads(r.content[:n])
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == 4
    json_answer = _raw_request(server, "/v2/models/housing-price/infer", json.dumps(HOUSE_REQUEST)).json()
    assert np.frombuffer(r.content[n:], "<f4")[0] == pytest.approx(json_answer["outputs"][0]["data"][0], rel=1e-7)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_requests(server, encoding):
    raw = json.dumps(HOUSE_REQUEST).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    r = _raw_request(server, "/v2/models/housing-price/infer", body, **{"content-encoding": encoding})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"][0] > 0, r.text


def _with(i: int, **changes):
    request = json.loads(json.dumps(HOUSE_REQUEST))
    request["inputs"][i].update(changes)
    return json.dumps(request)


BAD = [
    ("wrong shape", "/v2/models/housing-price/infer", _with(0, shape=[1, 11]), {}, 400, "shape must be [-1, 13]"),
    ("wrong datatype", "/v2/models/housing-price/infer", _with(1, datatype="FP32"), {}, 400, "datatype must be INT64"),
    ("missing input", "/v2/models/housing-price/infer",
     json.dumps({"inputs": HOUSE_REQUEST["inputs"][:1]}), {}, 400, "takes inputs"),
    ("data does not fill the shape", "/v2/models/housing-price/infer", _with(0, data=[1.0] * 12), {}, 400,
     "do not fill"),
    ("strings for numbers", "/v2/models/housing-price/infer", _with(1, data=["98103"]), {}, 400, "needs integers"),
    ("NaN", "/v2/models/housing-price/infer", _with(0, data=[float("nan")] * 13), {}, 400, "NaN"),
    ("unknown model", "/v2/models/nope/infer", json.dumps(HOUSE_REQUEST), {}, 404, "nope"),
    ("unknown version", "/v2/models/housing-price/versions/9/infer", json.dumps(HOUSE_REQUEST), {}, 404, "version"),
    ("not JSON", "/v2/models/housing-price/infer", "{oops", {}, 400, "not valid JSON"),
    ("no inputs list", "/v2/models/housing-price/infer", "{}", {}, 400, "inputs"),
    ("header length larger than the body", "/v2/models/housing-price/infer", json.dumps(HOUSE_REQUEST),
     {"Inference-Header-Content-Length": "99999"}, 400, "larger than the body"),
    ("header length not a number", "/v2/models/housing-price/infer", json.dumps(HOUSE_REQUEST),
     {"Inference-Header-Content-Length": "-3"}, 400, "byte count"),
    ("binary size past the data", "/v2/models/housing-price/infer",
     _with(1, data=None, parameters={"binary_data_size": 8}), {}, 400, "runs past"),
    ("bad gzip", "/v2/models/housing-price/infer", "not gzip", {"content-encoding": "gzip"}, 400, "gzip"),
    ("unknown encoding", "/v2/models/housing-price/infer", "x", {"content-encoding": "br"}, 415, "br"),
    ("unknown output", "/v2/models/housing-price/infer",
     json.dumps({**HOUSE_REQUEST, "outputs": [{"name": "cost"}]}), {}, 400, "outputs"),
    ("classification on a regressor", "/v2/models/housing-price/infer",
     json.dumps({**HOUSE_REQUEST, "outputs": [{"name": "price", "parameters": {"classification": 2}}]}), {}, 400,
     "labels"),
    # Malformed shapes of the protocol's own fields: each a 400 naming the field, never a 500.
    ("request parameters a list", "/v2/models/housing-price/infer",
     json.dumps({**HOUSE_REQUEST, "parameters": [1]}), {}, 400, "the request: parameters must be an object"),
    ("request parameters a string", "/v2/models/housing-price/infer",
     json.dumps({**HOUSE_REQUEST, "parameters": "binary"}), {}, 400, "the request: parameters must be an object"),
    ("input parameters a list", "/v2/models/housing-price/infer", _with(0, parameters=["binary_data_size"]), {}, 400,
     "input numeric: parameters must be an object"),
    ("input parameters a string", "/v2/models/housing-price/infer", _with(1, parameters="x"), {}, 400,
     "input categorical: parameters must be an object"),
    ("output parameters a list", "/v2/models/housing-price/infer",
     json.dumps({**HOUSE_REQUEST, "outputs": [{"name": "price", "parameters": [2]}]}), {}, 400,
     "output price: parameters must be an object"),
    ("output name a list", "/v2/models/housing-price/infer",
     json.dumps({**HOUSE_REQUEST, "outputs": [{"name": ["price"]}]}), {}, 400,
     'outputs[0] must be an object with a string "name"'),
    ("output name an object", "/v2/models/housing-price/infer",
     json.dumps({**HOUSE_REQUEST, "outputs": [{"name": {"a": 1}}]}), {}, 400, "outputs[0]"),
    ("outputs an object", "/v2/models/housing-price/infer",
     json.dumps({**HOUSE_REQUEST, "outputs": {"name": "price"}}), {}, 400, '"outputs" must be a list'),
    ("input name a list", "/v2/models/housing-price/infer",
     json.dumps({"inputs": [{**HOUSE_REQUEST["inputs"][0], "name": ["numeric"]}, HOUSE_REQUEST["inputs"][1]]}), {},
     400, 'inputs[0] must be an object with a string "name"'),
    ("batch sizes differ", "/v2/models/housing-price/infer",
     json.dumps({"inputs": [HOUSE_REQUEST["inputs"][0], {**HOUSE_REQUEST["inputs"][1], "shape": [2, 1],
                                                         "data": [98103, 98103]}]}), {}, 400, "differ"),
    # The typed endpoints' limits bind on /v2 too, from the declared shape, before any array is made.
    ("photos over the batch limit", "/v2/models/image-tagging/infer",
     json.dumps({"inputs": [{"name": "image", "shape": [6500, 32, 32, 3], "datatype": "UINT8",
                             "parameters": {"binary_data_size": 6500 * 3072}}]}),
     {}, 413, "batch of 6500 is over the limit of 64"),
    ("rows over the batch limit", "/v2/models/ad-click/infer",
     json.dumps({"inputs": [{"name": "numeric", "shape": [5000, 1], "datatype": "FP32", "data": [30.0] * 5000},
                            {"name": "categorical", "shape": [5000, 9], "datatype": "INT64", "data": [1] * 45000}]}),
     {}, 413, "over the limit of 1024 (NNSERVE_MAX_BATCH_ROWS)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "body", "headers", "status", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_4xx_with_an_error(server, case, path, body, headers, status, words):
    r = _raw_request(server, path, body, **headers)
    assert r.status_code == status, r.text
    assert words in r.json()["error"], r.json()


def test_classification_count_out_of_range(server):
    pixels = np.zeros((1, 32, 32, 3), np.uint8)
    request = {
        "inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": pixels.ravel().tolist()}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 11}}],
    }
    r = _raw_request(server, "/v2/models/image-tagging/infer", json.dumps(request))
    assert r.status_code == 400 and "1 to 10" in r.json()["error"]


def test_oip_requests_are_counted_in_metrics(server, client):
    numeric, codes = _tabular(HOUSING, [HOUSE])
    client.infer("housing-price", _triton_inputs(numeric, codes, True))
    needle = 'endpoint="/v2/models/housing-price/infer"'
    assert needle in metrics_containing(server, needle)
