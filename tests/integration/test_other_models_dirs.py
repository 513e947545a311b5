"""Serving from other models directories: a user's 1000-class ImageNet classifier, and broken models."""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import pytest

from loadtests.serving import bentoml_serve, server_log
from service.settings import Settings
from service.worker import Worker, standalone
from tests.conftest import IMAGENET_INDEX, MODELS, SAMPLE_PHOTOS
from tests.training.test_export import export_imagenet_like
from training.make_card import Config as CardConfig
from training.make_card import make_card


def test_an_imagenet_classifier_dropped_into_a_models_dir_is_served(tmp_path):
    make_card(
        CardConfig(onnx=export_imagenet_like(tmp_path), labels=IMAGENET_INDEX, out=tmp_path / "models" / "imagenet")
    )
    with bentoml_serve(tmp_path / "models") as url:
        meta = httpx.get(url + "/v1/models/imagenet-classifier").json()
        assert len(meta["labels"]) == 1000 and meta["image"]["size"] == [224, 224]
        photo = (SAMPLE_PHOTOS / "rocket.jpg").read_bytes()
        r = httpx.post(url + "/v1/image-tagging/predict", files={"photo": ("r.jpg", photo)}, data={"top_k": "7"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "imagenet-classifier" and len(body["tags"]) == 7
        imagenet = set(meta["labels"])
        assert all(t["label"] in imagenet for t in body["tags"])
        assert 0 < sum(t["score"] for t in body["tags"]) <= 1.0 + 1e-6
        r = httpx.post(url + "/v1/image-tagging/predict", files={"photo": ("r.jpg", photo)}, data={"top_k": "1000"})
        assert r.status_code == 200 and len(r.json()["tags"]) == 1000
        # the tabular models are not in this directory: their endpoints say so
        r = httpx.post(url + "/v1/housing-price/predict", json={"sqft_living": 1000, "bedrooms": 2, "zipcode": 98103})
        assert r.status_code == 404 and "housing-price" in r.json()["error"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("truncate_onnx", "sha256"),
        ("remove_card", "card.json: missing"),
        ("card_disagrees_with_its_graph", "as its card's features say; the graph takes"),
    ],
)
def test_a_model_that_cannot_load_keeps_the_service_not_ready(tmp_path, caplog, breakage, message):
    models = tmp_path / "models"
    shutil.copytree(MODELS / "housing-price", models / "housing-price")
    broken = models / "housing-price"
    if breakage == "truncate_onnx":
        data = (broken / "model.onnx").read_bytes()
        (broken / "model.onnx").write_bytes(data[: len(data) // 2])
    elif breakage == "remove_card":
        (broken / "card.json").unlink()
    else:  # a card that lost a feature: its graph still takes 13 numbers a row
        card = json.loads((broken / "card.json").read_text())
        card["numeric"] = card["numeric"][:-1]
        (broken / "card.json").write_text(json.dumps(card))
    # In-process, with the whole HTTP surface (service.worker.standalone): no `bentoml serve` needed here.
    transport = httpx.ASGITransport(app=standalone(Settings(models_dir=models)))

    async def scenario():
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            house = {"sqft_living": 1000, "bedrooms": 2, "zipcode": 98103}
            return [await client.get("/readyz"), await client.get("/v1/health"),
                    await client.post("/v1/housing-price/predict", json=house)]  # fmt: skip

    ready, health, predicted = asyncio.run(scenario())
    assert ready.status_code == 503
    assert health.status_code == 503 and health.json()["errors"] == ["housing-price"]
    assert predicted.status_code == 503  # never served from a half-loaded model
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(lines) == 1 and message in lines[0] and str(broken) in lines[0], lines


def test_api_keys_guard_every_route_but_the_probes(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("from-file\n")
    with bentoml_serve(MODELS, NNSERVE_API_KEYS="inline-key", NNSERVE_API_KEYS_FILE=str(keys)) as url:
        house = {"sqft_living": 1000, "bedrooms": 2, "zipcode": 98103}
        r = httpx.post(url + "/v1/housing-price/predict", json=house)
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert (
            httpx.post(url + "/v1/housing-price/predict", json=house, headers={"X-API-Key": "nope"}).status_code == 401
        )
        ok = httpx.post(url + "/v1/housing-price/predict", json=house, headers={"Authorization": "Bearer inline-key"})
        assert ok.status_code == 200 and ok.json()["price"] > 0
        assert httpx.get(url + "/v1/models", headers={"X-API-Key": "from-file"}).status_code == 200
        assert httpx.get(url + "/v2/models/ad-click").status_code == 401
        for probe in ("/livez", "/readyz", "/metrics", "/v2/health/ready"):
            assert httpx.get(url + probe).status_code == 200, probe
        for path in ("/v1/housing-price/predict", "/v2/models/ad-click/infer", "/readyz"):  # refused before anything
            assert _websocket_handshake(url, path).startswith(b"HTTP/1.1 403"), path
        assert "Traceback" not in server_log(url).read_text()
        import bentoml  # its client, as docs/api.md shows it: the key is its `token`
        from bentoml.exceptions import BentoMLException

        with bentoml.SyncHTTPClient(url, token="inline-key") as client:
            assert client.housing_price(**house)["price"] == ok.json()["price"]
        with bentoml.SyncHTTPClient(url) as client, pytest.raises(BentoMLException, match="missing API key") as no:
            client.housing_price(**house)  # built from the open schema; the call is refused, and says so
        assert no.value.error_code == 401


def _websocket_handshake(url: str, path: str) -> bytes:
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}\r\n\r\n".encode()
        )
        return conn.recv(4096)


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "%2E%2E", "housing-price%2F..%2F..%2Fservice"])
def test_model_names_in_oip_paths_cannot_reach_files(server, name):
    # Names are looked up among the loaded models, never joined to a path.
    r = httpx.get(f"{server}/v2/models/{name}")
    assert r.status_code == 404


def test_two_folders_with_one_model_name_serve_neither_and_say_which(tmp_path, caplog):
    from service.settings import Settings

    models = tmp_path / "models"
    shutil.copytree(MODELS / "ad-click", models / "ad-click")
    shutil.copytree(MODELS / "ad-click", models / "ad-click-copy")
    shutil.copytree(MODELS / "ad-click", models / ".ad-click.incoming")  # hidden: a publish under way, skipped
    worker = Worker(Settings(models_dir=models))
    registry = worker.registry
    assert not registry.ready and "ad-click" not in registry.adapters
    assert worker.health()["errors"] == ["ad-click"]
    lines = [r.getMessage() for r in caplog.records if "two folders" in r.getMessage()]
    assert len(lines) == 1 and str(models / "ad-click") in lines[0] and str(models / "ad-click-copy") in lines[0]


def three_class_classifier(path):
    """A real (tiny) classifier graph: float32 NCHW 8x8 photos -> 3 class logits (mean colour x weights)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([[4, 0, 0], [0, 4, 0], [0, 0, 4]], np.float32), "weights")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["colour"], keepdims=0),
            helper.make_node("MatMul", ["colour", "weights"], ["logits"]),
        ],  # fmt: skip
        "three-colours",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [weights, axes],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path


def test_a_classifier_of_fewer_labels_than_the_default_top_k_answers_them_all(tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["red", "green", "blue"]))
    onnx_path = three_class_classifier(tmp_path / "colours.onnx")
    make_card(CardConfig(onnx=onnx_path, labels=labels, name="colours", out=tmp_path / "models" / "colours",
                         resize_shorter=8, mean="0,0,0", std="1,1,1"))  # fmt: skip
    app = standalone(Settings(models_dir=tmp_path / "models"))
    photo = (SAMPLE_PHOTOS / "chelsea.png").read_bytes()

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            default = await c.post("/v1/image-tagging/predict", files={"photo": ("c.png", photo)})
            b64 = await c.post("/v1/image-tagging/predict-base64",
                               json={"image_base64": __import__("base64").b64encode(photo).decode()})  # fmt: skip
            two = await c.post("/v1/image-tagging/predict", files={"photo": ("c.png", photo)}, data={"top_k": "2"})
            four = await c.post("/v1/image-tagging/predict", files={"photo": ("c.png", photo)}, data={"top_k": "4"})
        return default, b64, two, four

    default, b64, two, four = asyncio.run(scenario())
    assert default.status_code == 200, default.text
    assert sorted(t["label"] for t in default.json()["tags"]) == ["blue", "green", "red"]
    assert b64.status_code == 200 and len(b64.json()["tags"]) == 3
    assert two.status_code == 200 and len(two.json()["tags"]) == 2
    assert four.status_code == 400 and four.json()["detail"][0]["loc"] == ["top_k"]  # asked for: refused


def test_a_version_whose_bar_failed_is_served_and_flagged_everywhere_it_is_described(tmp_path, caplog):
    """A rejected run's folder copied into models/ by hand: served (readiness as before), but /v1/health,
    the metadata (/v1 and /v2) and nnserve_model_bar_not_met say so, and the log says it once."""
    from prometheus_client import REGISTRY

    models = tmp_path / "models"
    shutil.copytree(MODELS / "housing-price", models / "housing-price")
    card = json.loads((models / "housing-price" / "card.json").read_text())
    failed = next(iter(card["bar"]["checks"]))
    card["bar"]["checks"][failed] = False
    (models / "housing-price" / "card.json").write_text(json.dumps(card))
    with caplog.at_level("WARNING", logger="service.models.registry"):
        app = standalone(Settings(models_dir=models))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [await c.get(p) for p in ("/readyz", "/v1/health", "/v1/models/housing-price",
                                             "/v2/models/housing-price")]  # fmt: skip

    ready, health, meta, oip = asyncio.run(scenario())
    assert ready.status_code == 200 and health.status_code == 200
    assert health.json()["models"]["housing-price"]["bar_status"] == "not met"
    assert health.json()["warnings"] == [f"housing-price v1: bar not met ({failed})"]
    assert meta.json()["bar_status"] == "not met" and oip.json()["parameters"]["bar_status"] == "not met"
    assert REGISTRY.get_sample_value("nnserve_model_bar_not_met", {"model": "housing-price", "version": "1"}) == 1
    said = [r for r in caplog.records if "acceptance bar was not met" in r.getMessage()]
    assert len(said) == 1 and failed in said[0].getMessage()
    committed = standalone(Settings(models_dir=MODELS))  # the committed models met their bars: no flag

    async def health_of_committed():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=committed), base_url="http://t") as c:
            return (await c.get("/v1/health")).json()

    assert "bar_status" not in json.dumps(asyncio.run(health_of_committed()))
