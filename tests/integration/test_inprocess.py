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
