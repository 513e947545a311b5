"""Outcome feedback, in-process (service.worker.standalone, real models, the payload log on): outcomes
joined to logged predictions by request id give the same measures as the same pairs offline."""

from __future__ import annotations

import asyncio
import random

import httpx
import numpy as np
from sklearn.metrics import roc_auc_score

from service.settings import Settings
from service.worker import standalone
from tests.conftest import MODELS
from tests.integration.test_http import HOUSE, IMPRESSION


def _impression(rng: random.Random) -> dict:
    return {**IMPRESSION, "age": rng.randint(18, 70), "ad_id": rng.randint(1, 400), "hour": rng.randint(0, 23),
            "device": rng.choice(["mobile", "desktop", "tablet"]), "site_id": rng.randint(1, 50)}  # fmt: skip


def test_online_measures_from_feedback_equal_the_offline_measures_of_the_same_pairs(tmp_path):
    app = standalone(Settings(models_dir=MODELS, payload_log_dir=tmp_path / "payloads"))
    rng = random.Random(0)

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            predicted = []  # (request id, [probability per row])
            for i in range(300):
                if i % 10:
                    r = await c.post("/v1/ad-click/predict", json=_impression(rng))
                    values = [r.json()["click_probability"]]
                else:
                    r = await c.post("/v1/ad-click/predict-batch", json={"impressions": [_impression(rng)] * 3})
                    values = [p["click_probability"] for p in r.json()["predictions"]]
                assert r.status_code == 200
                predicted.append((r.headers["x-bentoml-request-id"], values))
            house = await c.post("/v1/housing-price/predict", json=HOUSE)
            probe = await c.post(  # at once: its prediction was answered a moment ago, and is on its way to the log
                "/v1/ad-click/feedback", json={"request_id": predicted[-1][0], "outcomes": [0] * len(predicted[-1][1])}
            )
            assert probe.status_code == 200 and probe.json()["counted"], probe.text
            pairs = [(v, 0) for v in predicted[-1][1]]
            for request_id, values in predicted[:-1]:
                clicked = [rng.random() < min(1, 4 * v) for v in values]  # outcomes related to the answers
                body = {
                    "request_id": request_id,
                    **({"outcome": clicked[0]} if len(values) == 1 else {"outcomes": clicked}),
                }
                r = await c.post("/v1/ad-click/feedback", json=body)
                assert r.status_code == 200 and r.json()["counted"] and r.json()["rows"] == len(values), r.text
                pairs += list(zip(values, clicked, strict=True))
            again = await c.post("/v1/ad-click/feedback", json={"request_id": predicted[1][0], "outcome": 1})
            house_id = house.headers["x-bentoml-request-id"]
            price = await c.post("/v1/housing-price/feedback", json={"request_id": house_id, "outcome": 800_000})
            errors = [
                await c.post("/v1/ad-click/feedback", json={"request_id": "feedc0ffee000000", "outcome": 1}),
                await c.post("/v1/ad-click/feedback", json={"request_id": predicted[10][0], "outcomes": [1, 0]}),
                await c.post("/v1/ad-click/feedback", json={"request_id": predicted[1][0], "outcome": {"x": 1}}),
                await c.post("/v1/ad-click/feedback", json={"outcome": 1}),
                await c.post("/v1/housing-price/feedback", json={"request_id": predicted[1][0], "outcome": 1}),
                # what the fuzzer once answered 500: a string where a finite float was looked for
                await c.post(
                    "/v1/ad-click/feedback", json={"request_id": predicted[1][0], "outcome": None, "outcomes": [""]}
                ),
            ]
            drift = (await c.get("/v1/models/ad-click/drift")).json()
            housing = (await c.get("/v1/models/housing-price/drift")).json()
        return pairs, house.json(), again.json(), price.json(), errors, drift, housing

    pairs, house, again, price, errors, drift, housing = asyncio.run(scenario())
    p, y = np.array([v for v, _ in pairs]), np.array([int(c) for _, c in pairs])
    online = drift["online"]["1"]
    assert online["rows"] == len(pairs) == 270 + 3 * 30  # each prediction's rows once: the repeat not counted
    assert not again["counted"] and "already posted" in again["reason"] and "the first one counts" in again["reason"]
    assert 0 < y.sum() < len(y) and abs(online["auc"] - roc_auc_score(y, p)) < 1e-12
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    assert abs(online["log_loss"] - float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))) < 1e-12
    assert 0 <= online["calibration_error"] <= 1
    assert price["counted"] and housing["online"]["1"]["mae"] == abs(800_000 - house["price"])
    unknown, count, kind, missing, other_model, empty_label = errors
    assert empty_label.status_code == 400 and empty_label.json()["detail"][0]["loc"] == ["outcomes", 0]
    assert unknown.status_code == 404 and unknown.json()["detail"][0]["loc"] == ["request_id"]
    assert count.status_code == 400 and count.json()["detail"][0]["loc"] == ["outcomes"]
    assert kind.status_code == 400 and [d["loc"] for d in kind.json()["detail"]] == [["outcome"]]  # one error
    assert missing.status_code == 400 and missing.json()["detail"][0]["loc"] == ["request_id"]
    assert other_model.status_code == 404  # an ad-click request id is not a housing-price prediction


def test_without_the_payload_log_there_is_no_feedback_and_it_says_why():
    app = standalone(Settings(models_dir=MODELS))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v1/ad-click/feedback", json={"request_id": "a", "outcome": 1})

    r = asyncio.run(scenario())
    assert r.status_code == 404 and "NNSERVE_PAYLOAD_LOG_DIR" in r.json()["error"]
