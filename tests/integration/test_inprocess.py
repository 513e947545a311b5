"""The service in-process (BentoML's to_asgi() and Starlette's test client): fast endpoint checks."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from service.app import NNServe
from tests.conftest import SAMPLE_PHOTOS
from tests.integration.test_http import HOUSE, IMPRESSION


@pytest.fixture(scope="module")
def client():
    with TestClient(NNServe.to_asgi()) as c:
        yield c


def test_predictions(client):
    r = client.post("/v1/housing-price/predict", json=HOUSE)
    assert r.status_code == 200 and 100_000 < r.json()["price"] < 5_000_000
    r = client.post("/v1/ad-click/predict", json=IMPRESSION)
    assert r.status_code == 200 and 0 < r.json()["click_probability"] < 1
    photo = (SAMPLE_PHOTOS / "chelsea.png").read_bytes()
    r = client.post("/v1/image-tagging/predict", files={"photo": ("cat.png", photo, "image/png")}, data={"top_k": "3"})
    assert r.status_code == 200 and len(r.json()["tags"]) == 3


def test_client_error_shape(client):
    r = client.post("/v1/housing-price/predict", json={**HOUSE, "bedrooms": 99})
    assert r.status_code == 400
    assert r.json()["detail"] == [
        {
            "loc": ["bedrooms"],
            "msg": "Input should be less than or equal to 15",
            "received": 99,
            "type": "less_than_equal",
        }
    ]


def test_readiness_and_metadata(client):
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/models/ad-click").json()["categorical"][3]["name"] == "ad_id"


def test_settings_vary_in_process_without_a_server(tmp_path):
    """The whole HTTP surface, built from settings in one step: no `bentoml serve`, no environment."""
    import httpx

    from service.settings import Settings
    from service.worker import standalone
    from tests.conftest import MODELS

    settings = Settings(models_dir=MODELS, max_batch_rows=2, api_keys="k1,k2", docs_ui=False)
    app = standalone(settings)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"x-api-key": "k2"}) as c:
            three = await c.post("/v1/housing-price/predict-batch", json={"houses": [HOUSE] * 3})
            two = await c.post("/v1/housing-price/predict-batch", json={"houses": [HOUSE] * 2})
            keyless = await c.post("/v1/housing-price/predict", json=HOUSE, headers={"x-api-key": ""})
            spec = (await c.get("/docs.json")).json()
            docs = await c.get("/docs")
        return three, two, keyless, spec, docs

    three, two, keyless, spec, docs = __import__("asyncio").run(scenario())
    assert three.status_code == 400 and three.json()["detail"][0]["loc"] == ["houses"]
    assert two.status_code == 200 and len(two.json()["predictions"]) == 2
    assert keyless.status_code == 401
    assert spec["components"]["schemas"]["HouseBatch"]["properties"]["houses"]["maxItems"] == 2
    assert docs.status_code == 404  # NNSERVE_DOCS_UI=false: no page
