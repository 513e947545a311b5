"""Drift against the card, in-process: real models, the whole HTTP surface (service.worker.standalone),
real King County sales sent as requests."""

from __future__ import annotations

import asyncio
import csv
import random

import httpx

from service.cards import read_card
from service.settings import Settings
from service.worker import standalone
from tests.conftest import MODELS, SHARED_DATA

SALES = SHARED_DATA / "housing" / "kc_house_sales_2014-05_to_2015-03.csv"


def sales(before: str, count: int, seed: int = 0) -> list[dict]:
    """A random `count` of the file's sales dated before `before` (YYYYMMDD), as requests, inside the
    card's allowed ranges (the trainer drops the one sale outside them too)."""
    card = read_card(MODELS / "housing-price")
    features = [f for f in card.numeric if not f.date]
    allowed = {f.name: f.allowed for f in features}
    typed = {f.name: bool if f.boolean else int if f.integer else float for f in features}
    rows = []
    with SALES.open() as f:
        for sale in csv.DictReader(f):
            if sale["date"][:8] >= before:
                continue
            row = {name: float(sale[name]) for name in allowed}
            if any(not lo <= row[n] <= hi for n, (lo, hi) in allowed.items()):
                continue
            d = sale["date"]
            row = {n: typed[n](int(v)) if typed[n] is bool else typed[n](v) for n, v in row.items()}
            rows.append({**row, "zipcode": int(sale["zipcode"]), "sale_date": f"{d[:4]}-{d[4:6]}-{d[6:8]}"})
    return random.Random(seed).sample(rows, count)


def send(settings: Settings, loads: list[list[dict]]) -> list[tuple[dict, dict]]:
    """Each load posted in batches of 250; after each, the drift route's and /v1/health's answers."""
    app = standalone(settings)

    async def scenario():
        seen = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for rows in loads:
                for i in range(0, len(rows), 250):
                    r = await c.post("/v1/housing-price/predict-batch", json={"houses": rows[i : i + 250]})
                    assert r.status_code == 200, r.text[:500]
                drift = await c.get("/v1/models/housing-price/drift")
                assert drift.status_code == 200
                health = await c.get("/v1/health")
                assert health.status_code == 200  # drift is a warning, never a readiness failure
                seen.append((drift.json()["versions"]["1"], health.json()))
        return seen

    return asyncio.run(scenario())


def test_a_shifted_feature_drifts_and_the_others_do_not():
    rows = sales(before="20150401", count=3000)  # every labelled month: what the refit and its reference saw
    larger = [{**r, "sqft_living": min(round(r["sqft_living"] * 1.6), 50_000)} for r in rows]
    settings = Settings(models_dir=MODELS, drift_window_rows=3000, drift_window_s=0, drift_min_rows=500)
    (same, health_same), (shifted, health_shifted) = send(settings, [rows, larger])
    features = [n for n, f in same["distributions"].items() if f["kind"] != "output"]
    assert same["rows"] == 3000 and shifted["rows"] == 3000  # the window holds the latest load only
    assert set(features) == {f.name for f in read_card(MODELS / "housing-price").numeric} | {"zipcode"}
    for name in features:  # the same sales as the refit's: nothing drifted
        assert same["distributions"][name]["psi"] < 0.1, (name, same["distributions"][name])
    assert same["drifted"] == [] and "warnings" not in health_same
    psi = {n: shifted["distributions"][n]["psi"] for n in features}
    assert psi["sqft_living"] > 0.2 and shifted["distributions"]["sqft_living"]["drifted"]
    assert all(p < 0.1 for n, p in psi.items() if n != "sqft_living"), psi
    assert "sqft_living" in shifted["drifted"] and set(shifted["drifted"]) <= {"sqft_living", "output"}
    assert shifted["distributions"]["sqft_living"]["js_distance"] > same["distributions"]["sqft_living"]["js_distance"]
    assert any("sqft_living drifted" in w for w in health_shifted["warnings"])


def test_no_drift_route_figures_before_any_request_and_unknown_models_404():
    app = standalone(Settings(models_dir=MODELS))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/v1/models/ad-click/drift"), await c.get("/v1/models/nope/drift")

    empty, missing = asyncio.run(scenario())
    version = empty.json()["versions"]["1"]
    assert version["rows"] == 0 and version["drifted"] == []
    assert all(f["psi"] is None for f in version["distributions"].values())
    assert missing.status_code == 404 and missing.json()["detail"][0]["loc"] == ["model"]
