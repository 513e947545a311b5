"""Every endpoint of a real `bentoml serve` over real HTTP, against the committed models."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from loadtests.payloads import house_requests
from loadtests.photos import cifar_photos, encode, png_bomb
from loadtests.serving import metrics_containing, requests_counted
from service.cards import read_card
from service.measures import regression_metrics
from service.tasks.tabular.encoder import decimal_year
from tests.conftest import CIFAR_VAL, HOUSING_CSV, MODELS, SAMPLE_PHOTOS
from tests.integration.conftest import TEST_MAX_BODY
from training.contract import AD_CLICK, CIFAR10_LABELS, HOUSING
from training.data_housing import load_housing, split_by_date

HOUSE = {"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103, "bathrooms": 2.5, "grade": 8, "yr_built": 1990}
IMPRESSION = {
    "age": 29, "gender": "female", "device": "mobile", "city_id": 3, "ad_id": 17, "advertiser_id": 5,
    "category": "fashion", "site_id": 2, "hour": 21, "day_of_week": 5,
}  # fmt: skip


def post(server: str, route: str, **kwargs) -> httpx.Response:
    return httpx.post(server + route, timeout=30, **kwargs)


def session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS / name / "model.onnx"), providers=["CPUExecutionProvider"])


def _number(spec, feature, request: dict) -> float:
    if not feature.date:
        return float(request.get(feature.name, feature.default))
    if feature.name in request:
        return decimal_year(dt.date.fromisoformat(request[feature.name]))
    card = read_card(MODELS / spec.name)  # "latest": the last date seen in training, as the card records it
    return next(f.default for f in card.numeric if f.name == feature.name)


def _row(spec, request: dict) -> tuple[np.ndarray, np.ndarray]:
    """The graph's inputs for one request, built here from the contract, independently of the service."""
    numeric = [_number(spec, f, request) for f in spec.numeric]
    codes = []
    for f in spec.categorical:
        value = request.get(f.name, f.default)
        codes.append(f.values.index(value) if f.values else int(value))
    return np.array([numeric], np.float32), np.array([codes], np.int64)


def test_liveness_readiness_and_health(server):
    assert httpx.get(server + "/livez").status_code == 200
    assert httpx.get(server + "/readyz").status_code == 200
    health = httpx.get(server + "/v1/health").json()
    assert health["ready"] is True and set(health["models"]) == {"housing-price", "ad-click", "image-tagging"}


def test_housing_answer_equals_onnxruntime(server):
    r = post(server, "/v1/housing-price/predict", json=HOUSE)
    assert r.status_code == 200, r.text
    body = r.json()
    numeric, codes = _row(HOUSING, HOUSE)
    (expected,) = session("housing-price").run(None, {"numeric": numeric, "categorical": codes})
    assert body["price"] == pytest.approx(float(expected[0, 0]), rel=1e-6)
    assert body["model"] == "housing-price" and body["version"] and body["warnings"] == []


def test_adclick_answer_equals_onnxruntime(server):
    r = post(server, "/v1/ad-click/predict", json=IMPRESSION)
    assert r.status_code == 200, r.text
    numeric, codes = _row(AD_CLICK, IMPRESSION)
    (expected,) = session("ad-click").run(None, {"numeric": numeric, "categorical": codes})
    assert r.json()["click_probability"] == pytest.approx(float(expected[0, 0]), rel=1e-6)


def test_batches_equal_single_answers(server):
    houses = [HOUSE, {**HOUSE, "sqft_living": 3000}, {**HOUSE, "zipcode": 98004}]
    batch = post(server, "/v1/housing-price/predict-batch", json={"houses": houses}).json()["predictions"]
    singles = [post(server, "/v1/housing-price/predict", json=h).json()["price"] for h in houses]
    assert [p["price"] for p in batch] == pytest.approx(singles, rel=1e-6)
    impressions = [IMPRESSION, {**IMPRESSION, "device": "desktop", "hour": 3}]
    batch = post(server, "/v1/ad-click/predict-batch", json={"impressions": impressions}).json()["predictions"]
    singles = [post(server, "/v1/ad-click/predict", json=i).json()["click_probability"] for i in impressions]
    assert [p["click_probability"] for p in batch] == pytest.approx(singles, rel=1e-6)


def test_served_housing_model_reproduces_its_card_metrics(server):
    train, val = split_by_date(load_housing(HOUSING_CSV))
    every = train.concat(val)  # what the served model's final fit saw (its card's `final_fit`)
    houses = house_requests(every)
    prices: list[float] = []
    for i in range(0, len(houses), 1000):
        r = post(server, "/v1/housing-price/predict-batch", json={"houses": houses[i : i + 1000]})
        assert r.status_code == 200, r.text[:500]
        prices += [p["price"] for p in r.json()["predictions"]]
    card = json.loads((MODELS / "housing-price" / "card.json").read_text())
    served = regression_metrics(every.extra["price"], np.array(prices))
    for metric, value in card["metrics"]["final_fit"].items():
        assert served[metric] == pytest.approx(value, rel=1e-4), metric


def test_unseen_categories_and_unusual_numbers_are_served_with_warnings(server):
    r = post(server, "/v1/housing-price/predict", json={**HOUSE, "zipcode": 10001, "sqft_living": 19_000})
    assert r.status_code == 200
    fields = {w["field"]: w for w in r.json()["warnings"]}
    assert set(fields) == {"zipcode", "sqft_living"}
    assert "unknown bucket" in fields["zipcode"]["message"] and fields["zipcode"]["value"] == 10001
    assert "outside the range seen in training" in fields["sqft_living"]["message"]
    r = post(server, "/v1/ad-click/predict", json={**IMPRESSION, "ad_id": 999_999})
    assert r.status_code == 200 and [w["field"] for w in r.json()["warnings"]] == ["ad_id"]
    assert 0 < r.json()["click_probability"] < 1


def _tag(server: str, photo: bytes, name: str = "photo.jpg", **data) -> httpx.Response:
    return post(server, "/v1/image-tagging/predict", files={"photo": (name, photo)}, data=data)


def test_sample_photos_of_any_size_and_format(server):
    for path in sorted(SAMPLE_PHOTOS.iterdir()):
        r = _tag(server, path.read_bytes(), path.name, top_k="3")
        assert r.status_code == 200, (path.name, r.text)
        tags = r.json()["tags"]
        assert len(tags) == 3 and [t["score"] for t in tags] == sorted((t["score"] for t in tags), reverse=True)
        if path.name == "chelsea.png":
            assert "cat" in [t["label"] for t in tags], tags


def test_webp_upload(server):
    photo = Image.open(SAMPLE_PHOTOS / "chelsea.png").convert("RGB")
    r = _tag(server, encode(photo, "WEBP"), "chelsea.webp")
    assert r.status_code == 200 and len(r.json()["tags"]) == 5


def test_cifar_photo_per_class_equals_onnxruntime(server):
    tagger = session("image-tagging")
    correct = 0
    for label, jpeg in cifar_photos(CIFAR_VAL, per_class=1):
        r = _tag(server, jpeg, top_k="10")
        assert r.status_code == 200, r.text
        tags = r.json()["tags"]
        pixels = np.asarray(Image.open(__import__("io").BytesIO(jpeg)).convert("RGB"))[None]
        (probs,) = tagger.run(None, {"image": pixels})
        expected = {CIFAR10_LABELS[i]: float(p) for i, p in enumerate(probs[0])}
        assert {t["label"]: t["score"] for t in tags} == pytest.approx(expected, abs=1e-6)
        correct += tags[0]["label"] == label
    assert correct >= 8  # the model's top-1 is ~0.9 on this tar: 8 of 10 first photos at the least


def test_base64_and_batches_agree_with_multipart(server):
    photos = [jpeg for _, jpeg in cifar_photos(CIFAR_VAL, per_class=1)[:3]]
    single = [_tag(server, p).json()["tags"] for p in photos]
    b64 = [post(server, "/v1/image-tagging/predict-base64", json={"image_base64": base64.b64encode(p).decode()})
           for p in photos]  # fmt: skip
    assert [r.json()["tags"] for r in b64] == single
    files = [("photos", (f"{i}.jpg", p)) for i, p in enumerate(photos)]
    batch = post(server, "/v1/image-tagging/predict-batch", files=files)
    assert batch.status_code == 200 and batch.json()["results"] == single
    batch64 = post(server, "/v1/image-tagging/predict-batch-base64",
                   json={"images_base64": [base64.b64encode(p).decode() for p in photos]})  # fmt: skip
    assert batch64.status_code == 200 and batch64.json()["results"] == single


def test_base64_is_taken_as_clients_write_it(server):
    photo = (SAMPLE_PHOTOS / "rocket.jpg").read_bytes()
    spellings = {
        "standard": base64.b64encode(photo).decode(),
        "MIME, with line breaks": base64.encodebytes(photo).decode(),
        "URL-safe, unpadded": base64.urlsafe_b64encode(photo).decode().rstrip("="),
        "a browser's data URL": "data:image/jpeg;base64," + base64.b64encode(photo).decode(),
    }
    route = "/v1/image-tagging/predict-base64"
    answers = {k: post(server, route, json={"image_base64": v}) for k, v in spellings.items()}
    assert {r.status_code for r in answers.values()} == {200}, {k: r.text for k, r in answers.items()}
    assert len({json.dumps(r.json()["tags"]) for r in answers.values()}) == 1
    r = post(server, "/v1/image-tagging/predict-base64", json={"image_base64": "data:image/jpeg;base64,%%%"})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["image_base64"]


def test_model_metadata(server):
    r = httpx.get(server + "/v1/models")
    listing = r.json()
    assert {m["name"] for m in listing["models"]} == {"housing-price", "ad-click", "image-tagging"}
    housing = next(m for m in listing["models"] if m["name"] == "housing-price")  # a line per model, not its card
    assert set(housing) == {"name", "versions", "default", "task", "provider", "status", "metric"}, housing
    assert housing["status"] == "ready" and list(housing["metric"]) == ["r2"] and len(r.content) < 2_000
    full = httpx.get(server + "/v1/models?full=true").json()
    cards = {m["name"]: m for m in full["models"]}
    assert full["ready"] and cards["housing-price"]["numeric"][0]["name"] == "sqft_living"
    index = httpx.post(server + "/v2/repository/index", json={})  # read-only: open without management
    assert index.status_code == 200 and {e["state"] for e in index.json()} == {"READY"}, index.text
    assert httpx.post(server + "/v2/repository/models/ad-click/unload", json={}).status_code == 403
    meta = httpx.get(server + "/v1/models/housing-price").json()
    assert meta["provider"] == "CPUExecutionProvider"
    assert [f["name"] for f in meta["numeric"]] == [f.name for f in HOUSING.numeric]
    assert meta["numeric"][0]["allowed"] == [100, 20000] and "r2" in meta["metrics"]["model"]
    assert meta["signature"]["inputs"][0] == {"name": "numeric", "dtype": "float32", "shape": ["N", 13]}
    tagger = httpx.get(server + "/v1/models/image-tagging").json()
    assert tagger["labels"] == list(CIFAR10_LABELS) and tagger["training"]["versions"]["onnxruntime"]
    missing = httpx.get(server + "/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["detail"][0]["received"] == "nope"


def test_metrics_count_requests_and_latency_per_endpoint(server):
    post(server, "/v1/housing-price/predict", json=HOUSE)
    post(server, "/v1/housing-price/predict", json={**HOUSE, "bedrooms": -1})
    text = metrics_containing(server, 'endpoint="/v1/housing-price/predict",http_response_code="400"')
    ok = [line for line in text.splitlines() if line.startswith("bentoml_service_request_total{")
          and 'endpoint="/v1/housing-price/predict"' in line and 'http_response_code="200"' in line]  # fmt: skip
    assert ok and float(ok[0].rsplit(" ", 1)[1]) >= 1
    assert 'endpoint="/v1/housing-price/predict",http_response_code="400"' in text
    assert "bentoml_service_request_duration_seconds_bucket{" in text


def test_invented_paths_share_one_series_per_api_instead_of_one_each(server):
    invented = [f"/{uuid.uuid4().hex}", f"/v1/{uuid.uuid4().hex}/predict", f"/v2/models/{uuid.uuid4().hex}/ready"]
    for path in invented * 10:
        assert httpx.request("POST" if path.endswith("predict") else "GET", server + path).status_code == 404
    text = metrics_containing(server, 'endpoint="/v2/(unmatched)",http_response_code="404"')
    assert not [p for p in invented if p in text]  # BentoML's labels would hold each path: a series per path
    for label in ("(unmatched)", "/v1/(unmatched)", "/v2/(unmatched)"):
        assert requests_counted(text, f'endpoint="{label}",http_response_code="404"') >= 10, label


def _series(server: str, endpoint: str) -> dict[str, float]:
    """Every request series of one endpoint and status 200, summed over the workers."""
    found: dict[str, float] = {}
    for line in httpx.get(server + "/metrics").text.splitlines():
        if f'endpoint="{endpoint}"' in line and not line.startswith("#"):
            name = line.split("{", 1)[0]
            if name.endswith("in_progress") or 'http_response_code="200"' in line:
                key = name + ("" if "_bucket" not in name else line.split("le=", 1)[1].split('"')[1])
                found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def test_every_request_is_counted_once_with_its_duration(server):
    endpoint = "/v1/ad-click/predict"
    before = _series(server, endpoint)
    for _ in range(7):
        assert post(server, endpoint, json=IMPRESSION).status_code == 200
    after = _series(server, endpoint)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    assert delta["bentoml_service_request_total"] == 7
    assert delta["bentoml_service_request_duration_seconds_count"] == 7
    assert delta["bentoml_service_request_duration_seconds_bucket+Inf"] == 7
    assert 0 < delta["bentoml_service_request_duration_seconds_sum"] < 7 * 30
    assert after["bentoml_service_request_in_progress"] == 0


def test_openapi_document_is_valid_and_documents_every_field(server):
    from openapi_spec_validator import validate

    spec = httpx.get(server + "/docs.json").json()
    validate(spec)
    for name in ("HouseFeatures", "Impression"):
        for field, schema in spec["components"]["schemas"][name]["properties"].items():
            assert schema.get("description") and "example" in schema, (name, field)
    for route in ("/v1/housing-price/predict", "/v1/image-tagging/predict", "/v1/ad-click/predict-batch"):
        assert route in spec["paths"]


BAD_JSON = [
    ("wrong type", "/v1/housing-price/predict", {**HOUSE, "bedrooms": [3]}, 400, ["bedrooms"]),
    ("string for a number", "/v1/housing-price/predict", {**HOUSE, "sqft_living": "1800"}, 400, ["sqft_living"]),
    ("a fraction for an integer", "/v1/housing-price/predict", {**HOUSE, "sqft_living": 1800.5}, 400, ["sqft_living"]),
    ("true for an integer", "/v1/ad-click/predict", {**IMPRESSION, "hour": True}, 400, ["hour"]),
    ("missing field", "/v1/housing-price/predict", {"bedrooms": 3, "zipcode": 98103}, 400, ["sqft_living"]),
    ("negative size", "/v1/housing-price/predict", {**HOUSE, "sqft_lot": -10}, 400, ["sqft_lot"]),
    ("unknown field", "/v1/housing-price/predict", {**HOUSE, "sqft_livng": 2000}, 400, ["sqft_livng"]),
    ("closed vocabulary", "/v1/ad-click/predict", {**IMPRESSION, "device": "fridge"}, 400, ["device"]),
    ("hour out of range", "/v1/ad-click/predict", {**IMPRESSION, "hour": 24}, 400, ["hour"]),
    ("empty batch", "/v1/housing-price/predict-batch", {"houses": []}, 400, ["houses"]),
    ("batch over the limit", "/v1/ad-click/predict-batch", {"impressions": [IMPRESSION] * 1025}, 400, ["impressions"]),
    ("bad row in a batch", "/v1/housing-price/predict-batch", {"houses": [HOUSE, {**HOUSE, "bedrooms": -2}]}, 400,
     ["houses", 1, "bedrooms"]),
    ("top_k over labels", "/v1/image-tagging/predict-base64", {"image_base64": "AAAA", "top_k": 11}, 400, ["top_k"]),
    ("top_k zero", "/v1/image-tagging/predict-base64", {"image_base64": "AAAA", "top_k": 0}, 400, ["top_k"]),
    ("not base64", "/v1/image-tagging/predict-base64", {"image_base64": "%%%"}, 400, ["image_base64"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "route", "payload", "status", "loc"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_input_is_a_4xx_naming_the_field(server, case, route, payload, status, loc):
    r = post(server, route, json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] and loc in [d["loc"] for d in body["detail"]], body
    item = next(d for d in body["detail"] if d["loc"] == loc)
    assert item["msg"] and "received" in item


def test_a_whole_number_written_as_a_float_is_that_integer(server):
    """JSON does not tell 1800 from 1800.0: both are served, with the same answer."""
    for route, row in (("/v1/housing-price/predict", HOUSE), ("/v1/ad-click/predict", IMPRESSION)):
        as_floats = {k: float(v) if type(v) is int else v for k, v in row.items()}
        assert any(type(v) is int for v in row.values())  # some integer to write as a float
        r, r_float = post(server, route, json=row), post(server, route, json=as_floats)
        assert r.status_code == r_float.status_code == 200, r_float.text
        assert r.json() == r_float.json()


def test_a_yes_no_feature_takes_true_false_and_one_zero_as_the_data_writes_it(server):
    answers = {v: post(server, "/v1/housing-price/predict", json={**HOUSE, "waterfront": v}) for v in
               (True, 1, 1.0, False, 0, 0.0)}  # fmt: skip
    assert all(r.status_code == 200 for r in answers.values()), {v: r.text for v, r in answers.items()}
    assert answers[1].json() == answers[True].json() == answers[1.0].json()
    assert answers[0].json() == answers[False].json() == answers[0.0].json() != answers[1].json()
    for wrong in (2, 0.5, "true", "yes", None):
        r = post(server, "/v1/housing-price/predict", json={**HOUSE, "waterfront": wrong})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["waterfront"], (wrong, r.text)
    spec = httpx.get(server + "/docs.json").json()["components"]["schemas"]["HouseFeatures"]["properties"]
    assert {"type": "integer", "enum": [0, 1]} in spec["waterfront"]["anyOf"] and "1 or 0" in spec["waterfront"][
        "description"
    ]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_is_decoded_as_on_v2(server, encoding):
    import gzip
    import zlib

    compress = gzip.compress if encoding == "gzip" else zlib.compress
    plain = post(server, "/v1/housing-price/predict", json=HOUSE).json()
    headers = {"content-type": "application/json", "content-encoding": encoding}
    r = post(server, "/v1/housing-price/predict", content=compress(json.dumps(HOUSE).encode()), headers=headers)
    assert r.status_code == 200 and r.json()["price"] == plain["price"], r.text
    bomb = compress(b" " * (TEST_MAX_BODY + 1))  # tiny on the wire, over the limit decoded
    assert post(server, "/v1/housing-price/predict", content=bomb, headers=headers).status_code == 413
    r = post(server, "/v1/housing-price/predict", content=b"not compressed", headers=headers)
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["body"]
    r = post(server, "/v1/housing-price/predict", content=b"{}", headers={**headers, "content-encoding": "br"})
    assert r.status_code == 415 and r.json()["detail"][0]["loc"] == ["header", "content-encoding"]


def test_a_long_model_name_is_cut_in_the_answer_not_echoed_whole(server):
    name = "m" * 60_000
    for path in (f"/v1/{name}/predict", f"/v2/models/{name}/infer", f"/v1/models/{name}"):
        r = httpx.request("GET" if path.startswith("/v1/models") else "POST", server + path, json={})
        assert r.status_code == 404 and len(r.content) < 2_000, (path[:40], len(r.content))


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(server, token):
    body = json.dumps(HOUSE).replace('"bathrooms": 2.5', f'"bathrooms": {token}')
    r = post(server, "/v1/housing-price/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["bathrooms"], r.text


def test_invalid_json_is_a_400(server):
    r = post(
        server, "/v1/housing-price/predict", content=b'{"sqft_living": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]


def test_body_too_large_is_413(server):
    r = post(server, "/v1/image-tagging/predict-base64", json={"image_base64": "A" * (TEST_MAX_BODY + 10)})
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body"]


def test_unsupported_media_type_is_415(server):
    r = post(server, "/v1/housing-price/predict", content=json.dumps(HOUSE), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["detail"][0]["loc"] == ["header", "content-type"]
    r = post(server, "/v1/image-tagging/predict", json={"photo": "x"})
    assert r.status_code == 415
    for json_type in ("application/json; charset=utf-8", "application/vnd.api+json", "APPLICATION/JSON"):  # as FastAPI
        r = post(server, "/v1/housing-price/predict", content=json.dumps(HOUSE), headers={"content-type": json_type})
        assert r.status_code == 200, (json_type, r.text)
    r = post(server, "/v1/housing-price/predict", content=json.dumps(HOUSE), headers={"content-type": "text/x+json"})
    assert r.status_code == 415


def test_bad_photos(server):
    cat = Image.open(SAMPLE_PHOTOS / "chelsea.png").convert("RGB")
    jpeg = encode(cat, "JPEG")
    cases = [
        ("not an image", b"hello, I am text", 415),
        ("GIF is not supported", encode(cat, "GIF"), 415),
        ("truncated JPEG", jpeg[: len(jpeg) // 2], 400),
        ("corrupt PNG", encode(cat, "PNG")[:100] + b"\x00" * 500, 400),
        ("decompression bomb", png_bomb(), 413),
        ("empty file", b"", 400),
    ]
    for case, data, status in cases:
        r = _tag(server, data)
        assert r.status_code == status, (case, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"] == ["photo"], case
    r = post(
        server, "/v1/image-tagging/predict-batch", files=[("photos", ("a.jpg", jpeg)), ("photos", ("b.jpg", b"x"))]
    )
    assert r.status_code == 415 and r.json()["detail"][0]["loc"] == ["photos", 1]
    # after all that, the worker still answers
    assert _tag(server, jpeg).status_code == 200


def test_a_text_value_in_a_file_field_is_a_400_and_is_never_fetched(server):
    # BentoML would download a URL given here; we refuse it before BentoML sees the body.
    r = post(server, "/v1/image-tagging/predict", files={"photo": (None, f"{server}/readyz")})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["photo"], r.text
    r = post(server, "/v1/image-tagging/predict-batch", files=[("photos", ("a.png", b"x")), ("photos", (None, "hi"))])
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["photos"], r.text


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=xyz", "multipart/form-data", "multipart/form-data; boundary=" + "z" * 5000],
    ids=["garbage", "no boundary", "boundary of 5,000 characters"],
)
def test_malformed_multipart_is_a_400(server, content_type):
    r = post(server, "/v1/image-tagging/predict", content=b"garbage", headers={"content-type": content_type})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["body"], r.text


HOSTILE_JSON = [
    b"[" * 100_000 + b"]" * 100_000,
    b'\xff\xfe{"sqft_living": 1}',
    b'{"sqft_living": 1e999999}',
    b'{"sqft_living": 1800, "bedrooms": 3, "zipcode": 1180591620717411303424}',  # 2**70
    b'{"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103, "note": "' + b"a" * 1_000_000 + b'"}',
]


@pytest.mark.parametrize(
    "body", HOSTILE_JSON, ids=["deeply nested", "not UTF-8", "huge exponent", "integer beyond 64 bits", "very long"]
)
def test_hostile_json_is_a_400(server, body):
    r = post(server, "/v1/housing-price/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"], r.text


@pytest.mark.parametrize("unknown", [150, 200_000], ids=["past the list", "a million-problem body's kind"])
def test_a_body_of_many_problems_lists_the_first_hundred_and_counts_them_all(server, unknown):
    body = {**HOUSE, "sqft_living": "x", **{f"k{i}": 0 for i in range(unknown)}}
    r = post(server, "/v1/housing-price/predict", json=body)
    detail = r.json()["detail"]
    assert r.status_code == 400 and len(detail) == 100, r.text[:300]
    assert detail[0]["loc"] == ["sqft_living"] and detail[1] == {"loc": ["k0"], "msg": "Extra inputs are not permitted",
                                                                 "received": 0, "type": "extra_forbidden"}  # fmt: skip
    assert r.json()["error"].startswith(f"invalid request: {unknown + 1} problem(s) with sqft_living, k0, k1")
    assert r.json()["error"].endswith("(the first 100 listed)")


def test_a_long_unknown_key_is_named_cut_not_echoed_whole(server):
    r = post(server, "/v1/housing-price/predict", json={**HOUSE, "k" * 100_000: 1})
    (problem,) = r.json()["detail"]
    assert r.status_code == 400 and problem["loc"] == ["k" * 200 + "..."] and len(r.content) < 1_000, r.text[:300]


def test_huge_top_k_is_a_400_naming_it(server):
    r = post(server, "/v1/image-tagging/predict-base64", json={"image_base64": "AAAA", "top_k": 10**30})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["top_k"], r.text
    photo = (SAMPLE_PHOTOS / "rocket.jpg").read_bytes()
    r = _tag(server, photo, top_k="99999999999999999999")
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["top_k"], r.text


def test_no_error_answer_shows_a_trace_a_path_or_library_internals(server):
    answers = [post(server, route, json=payload) for _, route, payload, _, _ in BAD_JSON]
    answers += [
        post(server, "/v1/housing-price/predict", content=body, headers={"content-type": "application/json"})
        for body in HOSTILE_JSON
    ]
    answers += [_tag(server, b"\xff\xd8\xff" + b"\x00" * 300), _tag(server, b"GIF89a" + b"\x00" * 40)]
    answers.append(post(server, "/v2/models/ad-click/infer", content=b'{"inputs": [{"name": "numeric"}]}'))
    for r in answers:
        assert 400 <= r.status_code < 500, r.text
        for leak in ("Traceback", "site-packages", 'File "', ".py", "/work/", "pydantic_core", "XIODescriptor"):
            assert leak not in r.text, (leak, r.text[:300])


def test_every_answer_carries_its_own_request_id(server):
    ids = {post(server, "/v1/housing-price/predict", json=HOUSE).headers["x-bentoml-request-id"] for _ in range(5)}
    assert len(ids) == 5 and all(len(i) == 16 for i in ids)
