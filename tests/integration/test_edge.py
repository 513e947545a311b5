"""The HTTP edge over real HTTP: hostile multipart bodies, 405 with Allow, the OpenAPI document and the
docs page, client disconnects, BentoML's own client on every typed endpoint, JSON log lines, and
settings that must stop start-up."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import bentoml
import httpx
import pytest

from loadtests.serving import bentoml_serve, metrics_containing, requests_counted, server_log
from service import __version__
from tests.conftest import MODELS, SAMPLE_PHOTOS
from tests.integration.test_http import HOUSE, IMPRESSION

CAT = (SAMPLE_PHOTOS / "chelsea.png").read_bytes()
BOUNDARY = "edgeboundary"


def multipart(*parts: tuple[str | None, str | None, bytes]) -> bytes:
    """A multipart body from (name, filename, data) parts; a None name leaves the part unnamed."""
    out = b""
    for name, filename, data in parts:
        disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
        disposition += f'; filename="{filename}"' if filename is not None else ""
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def post_form(url: str, route: str, body: bytes) -> httpx.Response:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    return httpx.post(url + route, content=body, headers=headers, timeout=30)


RANDOM = bytes(range(256)) * 4  # not UTF-8
HOSTILE_FORMS = [
    ("undeclared binary file part", [("photo", "c.png", CAT), ("extra", "blob.bin", RANDOM)], ["extra"]),
    ("undeclared non-UTF-8 text part", [("photo", "c.png", CAT), ("note", None, RANDOM)], ["note"]),
    ("a part without a name", [("photo", "c.png", CAT), (None, "x.bin", RANDOM)], ["body", "part", 1]),
    ("photo twice", [("photo", "a.png", CAT), ("photo", "b.png", CAT)], ["photo"]),
    ("top_k twice", [("photo", "c.png", CAT), ("top_k", None, b"1"), ("top_k", None, b"2")], ["top_k"]),
    ("binary where text goes", [("photo", "c.png", CAT), ("top_k", None, RANDOM)], ["top_k"]),
    ("a file where text goes", [("photo", "c.png", CAT), ("model", "m.txt", b"image-tagging")], ["model"]),
    ("non-UTF-8 model name", [("photo", "c.png", CAT), ("model", None, b"\xff\xfe\x00")], ["model"]),
    ("text where the photo goes", [("photo", None, b"http://example.com/cat.png")], ["photo"]),
    ("no photo at all", [("top_k", None, b"3")], ["photo"]),
]


@pytest.mark.parametrize(("case", "parts", "loc"), HOSTILE_FORMS, ids=[c[0] for c in HOSTILE_FORMS])
def test_any_unexpected_multipart_part_is_a_400_naming_it(server, case, parts, loc):
    r = post_form(server, "/v1/image-tagging/predict", multipart(*parts))
    assert r.status_code == 400, r.text
    assert loc in [d["loc"] for d in r.json()["detail"]], r.json()
    if case != "photo twice":  # two `photos` parts are a batch of two
        batch = [("photos", f, d) if n == "photo" else (n, f, d) for n, f, d in parts]
        r = post_form(server, "/v1/image-tagging/predict-batch", multipart(*batch))
        assert r.status_code == 400, r.text
        batch_loc = ["photos" if part == "photo" else part for part in loc]
        assert batch_loc in [d["loc"] for d in r.json()["detail"]], r.json()


def test_a_batch_of_photos_beyond_the_limit_is_a_400_naming_it(server):
    r = post_form(
        server, "/v1/image-tagging/predict-batch", multipart(*[("photos", f"{i}.png", b"x") for i in range(65)])
    )
    assert (
        r.status_code == 400 and r.json()["detail"][0]["loc"] == ["photos"] and r.json()["detail"][0]["received"] == 65
    )


@pytest.mark.parametrize("route", ["/v1/image-tagging/predict", "/v1/image-tagging/predict-batch"])
def test_a_body_of_many_parts_is_one_short_400_not_one_problem_per_part(server, route):
    r = post_form(server, route, multipart(*[(f"x{i}", None, b"v") for i in range(20_000)]))
    assert r.status_code == 400 and [d["type"] for d in r.json()["detail"]] == ["too_many_parts"], r.text[:300]
    r = post_form(server, route, multipart(*[(f"x{i}", None, b"v") for i in range(3)]))  # a few strays: each named
    assert r.status_code == 400 and {"x0", "x1", "x2"} <= {d["loc"][0] for d in r.json()["detail"]}, r.text


def test_the_bentoml_client_calls_every_typed_endpoint(server):
    photo = SAMPLE_PHOTOS / "chelsea.png"
    with bentoml.SyncHTTPClient(server) as client:
        assert client.housing_price(**HOUSE) == httpx.post(server + "/v1/housing-price/predict", json=HOUSE).json()
        assert client.housing_price_batch(houses=[HOUSE])["predictions"][0]["price"] > 0
        assert client.ad_click(**IMPRESSION)["click_probability"] > 0
        assert client.ad_click_batch(impressions=[IMPRESSION, IMPRESSION])["predictions"][1]["click_probability"] > 0
        tags = client.image_tagging(photo=Path(photo), top_k=2)["tags"]
        assert [t["label"] for t in tags][0] == "cat" and len(tags) == 2
        results = client.image_tagging_batch(photos=[Path(photo)] * 2, top_k=1, model="image-tagging")["results"]
        assert [r[0]["label"] for r in results] == ["cat", "cat"]
        b64 = __import__("base64").b64encode(photo.read_bytes()).decode()
        assert client.image_tagging_base64(image_base64=b64)["tags"][0]["label"] == "cat"
        assert len(client.image_tagging_batch_base64(images_base64=[b64])["results"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/housing-price/predict", "POST"),
        ("DELETE", "/v1/models/ad-click", "GET, HEAD"),
        ("POST", "/v1/health", "GET, HEAD"),
        ("DELETE", "/v2/models/ad-click", "GET, HEAD"),
        ("GET", "/v2/models/ad-click/infer", "POST"),
    ],
)
def test_405_says_which_methods_are_allowed(server, method, path, allow):
    r = httpx.request(method, server + path)
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == set(allow.split(", ")), r.headers
    assert r.json()["error"]


@pytest.mark.parametrize("path", ["/readyz", "/v1/models", "/v1/health", "/v1/models/ad-click", "/v2/models/ad-click"])
def test_head_answers_as_get_without_a_body(server, path):
    head, get = httpx.head(server + path), httpx.get(server + path)
    assert head.status_code == get.status_code == 200 and head.content == b"", (head.status_code, get.status_code)
    assert head.headers["content-type"] == get.headers["content-type"]


def test_openapi_document_details(server):
    spec = httpx.get(server + "/docs.json").json()
    assert spec["info"]["version"] == __version__
    for route, operation in spec["paths"].items():
        if "post" in operation and not route.startswith("/v2/repository/"):  # those take an empty body too
            assert operation["post"]["requestBody"]["required"] is True, route
    form = spec["paths"]["/v1/image-tagging/predict-batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    photos = form["schema"]["properties"]["photos"]
    assert photos["minItems"] == 1 and photos["maxItems"] == 64
    house = spec["components"]["schemas"]["HouseFeatures"]["properties"]
    assert house["sale_date"]["format"] == "date" and house["sale_date"]["example"] == "2015-01-31"


def test_the_docs_page_is_served_at_docs_and_root_from_local_assets_only(server):
    for path in ("/docs", "/"):
        r = httpx.get(server + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "https://" not in r.text and "http://" not in r.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        for asset in assets:  # every script and stylesheet the page names is served here
            assert httpx.get(server + asset).status_code == 200, asset


def test_a_client_that_hangs_up_mid_request_is_not_counted_as_a_client_error(server):
    route = "/v1/ad-click/predict"
    before = metrics_containing(server, "bentoml_service_request_total")
    port = int(server.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as conn:
            head = f"POST {route} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
            conn.sendall(head.encode() + b'{"age": 29')  # and hangs up
    needle = f'nnserve_client_disconnects_total{{endpoint="{route}"}}'
    text = metrics_containing(server, needle)
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(needle))
    assert counted >= 3
    bad = f'endpoint="{route}",http_response_code="400"'
    assert requests_counted(text, bad) == requests_counted(before, bad)  # no 400 for them
    assert server_log(server).read_text().count(f"client gone before its request was read: POST {route}") >= 3


def test_json_log_lines_carry_the_request_id_and_no_page_is_served_with_the_docs_ui_off(tmp_path):
    with bentoml_serve(MODELS, NNSERVE_LOG_FORMAT="json", NNSERVE_WORKERS="1", NNSERVE_DOCS_UI="false") as url:
        for path in ("/", "/docs", "/static_content/swagger-ui-bundle.js"):  # BentoML's stock page loads GTM
            page = httpx.get(url + path)
            assert page.status_code == 404 and "googletagmanager" not in page.text, (path, page.text[:200])
        assert httpx.get(url + "/docs.json").status_code == 200
        answers = [httpx.post(url + "/v1/housing-price/predict", json=HOUSE) for _ in range(20)]
        request_ids = {answer.headers["x-bentoml-request-id"] for answer in answers}
        httpx.post(url + "/v1/housing-price/predict", content=b"{", headers={"content-type": "application/json"})
        deadline = time.monotonic() + 10
        while not all(i in server_log(url).read_text() for i in request_ids) and time.monotonic() < deadline:
            time.sleep(0.1)  # access log lines are written in batches, after the answer
        lines = [line for line in server_log(url).read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    access = [e for e in entries if e.get("request_id") in request_ids]
    assert len(access) == 20 and all("path=/v1/housing-price/predict," in e["message"] for e in access), entries[-5:]
    assert len(request_ids) == 20  # one line per request, each with its own id
    assert any("loaded housing-price" in e["message"] for e in entries)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"NNSERVE_API_KEYS": " , "}, "NNSERVE_API_KEYS=' , ': set, but holds no key"),
        ({"NNSERVE_API_KEYS_FILE": "EMPTY"}, "holds no key (only comments or blank lines)"),
        ({"NNSERVE_LOG_FORMAT": "yaml"}, "NNSERVE_LOG_FORMAT='yaml': Input should be 'text' or 'json'"),
        ({"NNSERVE_MAX_BATCH_ROWS": "0"}, "NNSERVE_MAX_BATCH_ROWS='0': Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(tmp_path, env, line):
    empty = tmp_path / "keys"
    empty.write_text("# rotated out\n\n")
    env = {k: str(empty) if v == "EMPTY" else v for k, v in env.items()}
    with pytest.raises(RuntimeError, match="bentoml serve exited") as failure, bentoml_serve(MODELS, **env):
        pass
    log = str(failure.value)
    assert log.count(line) == 1 and "cannot start:" in log and "Traceback" not in log, log
