"""Explanations from a real server: every tabular attribution set adds up to the prediction minus the
baseline; they agree with the `shap` library (a test-only reference) run on the same graph and the same
background rows, 200 real houses (sampled: within the stated errors) and 200 impressions (exact: equal);
the photo's map is a JSON grid or a PNG of the photo's size; the caps are 413s naming their setting."""

from __future__ import annotations

import io

import bentoml
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import shap
from PIL import Image

from loadtests.payloads import houses, impressions
from service.cards import read_card
from service.settings import Settings
from service.tasks.tabular import explain
from service.tasks.tabular.encoder import TabularEncoder
from service.tasks.tabular.types import tabular_types
from service.worker import standalone
from tests.conftest import MODELS, SAMPLE_PHOTOS

ROWS = 200
LECTURE_HOUSE = {"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103}


def _explained(url: str, model: str, rows: list[dict]) -> list[dict]:
    out = []
    for i in range(0, len(rows), 16):  # NNSERVE_EXPLAIN_MAX_BATCH
        r = httpx.post(f"{url}/v1/{model}/explain-batch", json={_batch_field(model): rows[i : i + 16]}, timeout=120)
        assert r.status_code == 200, r.text
        out += r.json()["explanations"]
    return out


def _batch_field(model: str) -> str:
    return {"housing-price": "houses", "ad-click": "impressions"}.get(model, "rows")


def _shap_reference(model: str, rows: list[dict], exact: bool) -> tuple[np.ndarray, list[dict]]:
    """shap's values on the same graph and background rows, for the requests as the encoder encodes them."""
    card = read_card(MODELS / model)
    typed = tabular_types(card, len(rows)).row  # validated as the service validates them (dates as dates)
    numeric, codes, _ = TabularEncoder(card).encode([typed.model_validate(r).__dict__ for r in rows])
    bg_numeric, bg_codes, _ = explain.background(card, Settings().explain_background_rows, np.float32)
    session = ort.InferenceSession(str(MODELS / model / "model.onnx"), providers=["CPUExecutionProvider"])
    width = numeric.shape[1]

    def f(x: np.ndarray) -> np.ndarray:
        feed = {"numeric": x[:, :width].astype(np.float32), "categorical": x[:, width:].astype(np.int64)}
        return session.run(None, feed)[0][:, 0].astype(np.float64)

    background = np.hstack([bg_numeric.astype(np.float64), bg_codes])
    masker = shap.maskers.Independent(background, max_samples=len(background))
    x = np.hstack([numeric.astype(np.float64), codes])
    if exact:
        values = shap.explainers.Exact(f, masker)(x).values
    else:
        values = shap.explainers.Permutation(f, masker, seed=0)(x, max_evals=64 * (2 * x.shape[1] + 1)).values
    return values, rows


def test_the_lecture_house_explained_adds_up_in_dollars(server):
    r = httpx.post(server + "/v1/housing-price/explain", json=LECTURE_HOUSE)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["unit"] == "USD" and set(answer["attributions"]) == {f["name"] for f in _fields("housing-price")}
    price = httpx.post(server + "/v1/housing-price/predict", json=LECTURE_HOUSE).json()["price"]
    assert answer["prediction"] == pytest.approx(price, rel=1e-6)
    total = sum(answer["attributions"].values())
    assert total == pytest.approx(answer["prediction"] - answer["baseline"], rel=1e-4)
    assert answer["standard_errors"] and "permutations" in answer["method"]
    meta = httpx.get(server + "/v1/models/housing-price").json()["explanations"]
    assert meta["graph_rows"] == answer["rows_run"] and meta["routes"] == ["explain", "explain-batch"]
    with bentoml.SyncHTTPClient(server) as client:  # BentoML's own client knows the verb from /schema.json
        assert client.housing_price_explain(**LECTURE_HOUSE)["attributions"] == answer["attributions"]


def _fields(model: str) -> list[dict]:
    card = read_card(MODELS / model)
    return [{"name": f.name} for f in (*card.numeric, *card.categorical)]


def test_200_impressions_exact_and_equal_to_shap(server):
    rows = impressions()[:ROWS]
    ours = _explained(server, "ad-click", rows)
    names = [f["name"] for f in _fields("ad-click")]
    reference, _ = _shap_reference("ad-click", rows, exact=True)
    for answer, theirs in zip(ours, reference, strict=True):
        assert answer["method"].startswith("exact") and answer["standard_errors"] is None
        got = np.array([answer["attributions"][n] for n in names])
        assert np.allclose(got, theirs, atol=2e-6), (got, theirs)
        assert got.sum() == pytest.approx(answer["prediction"] - answer["baseline"], rel=1e-4, abs=1e-7)
        odds = answer["log_odds"]
        assert sum(odds["attributions"].values()) == pytest.approx(odds["prediction"] - odds["baseline"], rel=1e-4)


def test_200_houses_sampled_agree_with_shap_within_the_stated_errors(server):
    rows = houses()[:ROWS]
    ours = _explained(server, "housing-price", rows)
    names = [f["name"] for f in _fields("housing-price")]
    reference, _ = _shap_reference("housing-price", rows, exact=False)
    z = []
    for answer, theirs in zip(ours, reference, strict=True):
        got = np.array([answer["attributions"][n] for n in names])
        error = np.array([answer["standard_errors"][n] for n in names])
        assert got.sum() == pytest.approx(answer["prediction"] - answer["baseline"], rel=1e-4)
        moving = error > 1e-9
        # shap's own estimate is sampled too, over as many permutations: the difference's error is ~√2 ours
        z += list(np.abs(got[moving] - theirs[moving]) / (np.sqrt(2) * error[moving]))
    z = np.array(z)
    print(f"houses: {len(z)} attributions, {np.mean(z <= 2):.1%} within 2 errors, largest {z.max():.1f}")
    assert np.mean(z <= 2) > 0.9 and np.mean(z <= 4) > 0.99


def test_a_photo_is_explained_as_a_grid_and_as_a_png_of_its_size(server):
    photo = (SAMPLE_PHOTOS / "chelsea.png").read_bytes()
    r = httpx.post(server + "/v1/image-tagging/explain", files={"photo": ("chelsea.png", photo)}, timeout=60)
    assert r.status_code == 200, r.text
    answer = r.json()
    grid = np.array(answer["grid"])
    assert answer["label"] == "cat" and grid.shape == (8, 8) and answer["photo_size"] == [451, 300]
    assert grid.max() > 0 and answer["rows_run"] == 65
    png = httpx.post(server + "/v1/image-tagging/explain", files={"photo": ("chelsea.png", photo)},
                     headers={"Accept": "image/png"}, timeout=60)  # fmt: skip
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == Image.open(io.BytesIO(photo)).size


def test_over_the_caps_is_a_413_naming_the_setting(server):
    rows = impressions()[:17]
    r = httpx.post(server + "/v1/ad-click/explain-batch", json={"impressions": rows})
    assert r.status_code == 413 and "NNSERVE_EXPLAIN_MAX_BATCH" in r.text
    bad = httpx.post(server + "/v1/housing-price/explain", json={"bedrooms": 3})
    assert bad.status_code == 400 and "sqft_living" in bad.text  # validated as a prediction is


def test_a_model_whose_smallest_explanation_is_over_the_rows_cap_is_a_413():
    import asyncio

    app = standalone(Settings(models_dir=MODELS, explain_background_rows=256, explain_max_rows=1024))

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v1/housing-price/explain", json=LECTURE_HOUSE)

    r = asyncio.run(ask())
    assert r.status_code == 413 and "NNSERVE_EXPLAIN_MAX_ROWS" in r.text
