"""Property-based fuzzing against the real server: every operation of our OpenAPI document with
schemathesis (no 5xx, every answer conforming to its documented status, content type and schema),
and, with hypothesis, the bodies no document describes (below).

`make test` runs 25 examples per operation and property; `make fuzz` runs 300 (NNSERVE_FUZZ_EXAMPLES)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtests.photos import cifar_photos
from tests.conftest import CIFAR_VAL
from tests.integration.test_http import HOUSE, IMPRESSION
from tests.integration.test_oip import HOUSE_REQUEST

EXAMPLES = int(os.environ.get("NNSERVE_FUZZ_EXAMPLES", "25"))
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    schemathesis = Path(sys.executable).parent / "schemathesis"
    out = subprocess.run(
        [str(schemathesis), "run", f"{server}/docs.json", "--checks", CHECKS, "--max-examples", str(EXAMPLES),
         "--no-color", "--seed", "1"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,  # its cache (.schemathesis/) stays out of the tree
    )  # fmt: skip
    summary = out.stdout[-3000:]
    assert out.returncode == 0, summary
    generated = int(re.search(r"(\d+) generated", out.stdout).group(1))  # type: ignore[union-attr]
    assert generated >= 15 * EXAMPLES // 3, summary  # every operation got its share of cases


def test_unknown_routes_and_methods_answer_json(server):
    for method, path, status in [
        ("GET", "/v1/nope", 404),
        ("GET", "/v2/nothing", 404),
        ("DELETE", "/v2/models/ad-click", 405),
        ("GET", "/v2/models/a%0Ab", 404),  # a newline: BentoML's router never hands it to our apps
        ("POST", "/v1/a%0Ab/predict", 404),
    ]:
        r = httpx.request(method, server + path)
        assert r.status_code == status and r.headers["content-type"].startswith("application/json"), (path, r.text)
        assert r.json()["error"]


# --- beyond the OpenAPI document: bodies no schema describes ------------------------------------------
# schemathesis sends what the document allows, give or take; these send what it does not: undeclared,
# unnamed, duplicated and binary multipart parts, JSON with extra keys holding binary-looking strings,
# and Open Inference Protocol documents whose own fields have the wrong shape. Every answer must be a
# JSON 2xx or 4xx: never a 5xx, never a crash. Derandomised, as schemathesis runs with a fixed seed: the
# same cases every run, so a failure is reproducible and CI is not a lottery (make fuzz runs 300).
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
SMALL_PHOTO = cifar_photos(CIFAR_VAL, per_class=1)[0][1]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
BINARY_LOOKING = st.sampled_from(
    ["\x00\x01\x02", "\ud800", "\udfff", "\uffff", "\x7f\x80\x81", "%00", "\\xff"]
) | st.text(alphabet=st.characters(max_codepoint=0x10FFFF), max_size=16)


def _part_bytes(name: str | None, filename: str | None, data: bytes) -> bytes:
    disposition = b"form-data" + (
        b'; name="' + name.encode("utf-8", "surrogatepass") + b'"' if name is not None else b""
    )
    if filename is not None:
        disposition += b'; filename="' + filename.encode("utf-8", "surrogatepass") + b'"'
    return b"Content-Disposition: " + disposition + b"\r\n\r\n" + data


PARTS = st.lists(
    st.tuples(
        st.none() | st.sampled_from(["photo", "photos", "top_k", "model", "extra"]) | st.text(max_size=8),
        st.none() | st.text(max_size=8),
        st.sampled_from([SMALL_PHOTO, b"3", b"image-tagging"]) | st.binary(max_size=64),
    ),
    max_size=6,
)


@FUZZ
@given(
    parts=PARTS,
    route=st.sampled_from(
        ["/v1/image-tagging/predict", "/v1/image-tagging/predict-batch", "/v1/image-tagging/explain"]
    ),
)
def test_multipart_bodies_of_any_shape_never_get_a_5xx(server, parts, route):
    body = b"".join(b"--fuzzboundary\r\n" + _part_bytes(*p) + b"\r\n" for p in parts) + b"--fuzzboundary--\r\n"
    r = httpx.post(server + route, content=body, headers={"content-type": "multipart/form-data; boundary=fuzzboundary"})
    assert r.status_code < 500 and r.headers["content-type"] == "application/json", (r.status_code, r.text)
    assert r.status_code == 200 or r.json()["detail"], r.text


JSON_ROUTES = {
    "/v1/housing-price/predict": HOUSE,
    "/v1/housing-price/predict-batch": {"houses": [HOUSE]},
    "/v1/ad-click/predict": IMPRESSION,
    "/v1/ad-click/predict-batch": {"impressions": [IMPRESSION]},
    "/v1/image-tagging/predict-base64": {"image_base64": base64.b64encode(SMALL_PHOTO).decode()},
    "/v1/image-tagging/predict-batch-base64": {"images_base64": [base64.b64encode(SMALL_PHOTO).decode()]},
    "/v1/housing-price/explain": HOUSE,  # explanations are validated as predictions are
    "/v1/ad-click/explain-batch": {"impressions": [IMPRESSION]},
    "/v1/image-tagging/explain-base64": {"image_base64": base64.b64encode(SMALL_PHOTO).decode()},
}


EXTRA_KEYS = st.dictionaries(BINARY_LOOKING, BINARY_LOOKING | JSON_VALUES, min_size=1, max_size=3)


@FUZZ
@given(route=st.sampled_from(sorted(JSON_ROUTES)), extra=EXTRA_KEYS, raw=st.binary(max_size=8))
def test_json_with_extra_keys_and_binary_looking_strings_gets_a_4xx_naming_them(server, route, extra, raw):
    text = json.dumps({**JSON_ROUTES[route], **extra})
    for body in (text.encode("utf-8", "surrogatepass"), text[:-1].encode() + b', "x": "' + raw + b'"}'):
        r = httpx.post(server + route, content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and r.json()["detail"], (body[:200], r.status_code, r.text[:300])


@FUZZ
@given(
    where=st.sampled_from(["request", "input", "output"]),
    key=st.sampled_from(["parameters", "name", "shape", "datatype", "data", "outputs", "id", "inputs"]),
    value=JSON_VALUES,
)
def test_oip_documents_with_fields_of_the_wrong_shape_get_a_4xx(server, where, key, value):
    document = {**json.loads(json.dumps(HOUSE_REQUEST)), "outputs": [{"name": "price"}]}
    target = {"request": document, "input": document["inputs"][0], "output": document["outputs"][0]}[where]
    target[key] = value
    r = httpx.post(server + "/v2/models/housing-price/infer", json=document)
    assert r.status_code < 500 and "error" in r.json() or r.status_code == 200, (document, r.status_code, r.text)


# --- hostile model folders and policy files: what an operator, a script or an attacker puts on disk -------
# Each example is a models directory holding a good model beside a folder (or a version, or a policy file)
# broken one way or another: truncated, nested deep, wrong types, random bytes, a FIFO, a folder where a
# file goes. The registry must never raise, must serve the good model, and must name the broken thing.
def _mutated_card(card: dict, kind: str, data: bytes, depth: int) -> bytes:
    text = json.dumps(card)
    if kind == "truncated":
        return text[: len(text) * (data[0] if data else 1) // 256].encode()
    if kind == "deep":
        return ("[" * depth + "]" * depth).encode()
    if kind == "bytes":
        return data
    if kind == "wrong_types":  # a field of the card replaced by a value of another kind
        key = sorted(card)[(data[0] if data else 0) % len(card)]
        return json.dumps({**card, key: [data.hex()] if isinstance(card[key], str) else data.hex()}).encode()
    if kind == "deep_field":  # JSON that parses, with a field nested where the card has a list
        return json.dumps({**card, "numeric": json.loads("[" * min(depth, 900) + "]" * min(depth, 900))}).encode()
    return text.encode()


FOLDER_BREAKAGE = st.sampled_from(["truncated", "deep", "bytes", "wrong_types", "deep_field", "fifo", "folder"])


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    card_kind=FOLDER_BREAKAGE,
    policy_kind=FOLDER_BREAKAGE,
    versioned=st.booleans(),
    data=st.binary(max_size=64),
    depth=st.integers(min_value=1, max_value=200_000),
)
def test_a_broken_model_folder_or_policy_file_never_takes_the_service_down(
    tmp_path_factory, card_kind, policy_kind, versioned, data, depth
):
    import shutil

    from service.settings import Settings
    from service.worker import Worker
    from tests.conftest import MODELS

    models = tmp_path_factory.mktemp("hostile") / "models"
    shutil.copytree(MODELS / "ad-click", models / "ad-click")  # the good one
    broken = models / "housing-price" / ("1" if versioned else "")
    shutil.copytree(MODELS / "housing-price", broken)
    card = json.loads((MODELS / "housing-price" / "card.json").read_text())

    def spoil(path: Path, kind: str) -> None:
        if path.exists():
            path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
        else:
            path.write_bytes(_mutated_card(card, kind, data, depth))

    spoil(broken / "card.json", card_kind)
    spoil(models / "policy.json", policy_kind)
    health = Worker(Settings(models_dir=models)).health()  # never raises, never blocks
    assert health["models"]["ad-click"]["version"] == "1", health  # the good model serves
    assert "housing-price" not in health["models"] or card_kind == "wrong_types", health
    assert health.get("policy_error") or policy_kind == "wrong_types", health
