"""Payload logs and their outcomes back as training data (training/payload_data.py): real sales and
impressions are served in-process with the payload log on, their outcomes posted back, the log exported
in the trainer's layout, and the trainer's own reader reads exactly the rows that were sent."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import httpx
import numpy as np

from loadtests.payloads import house_requests
from service.settings import Settings
from service.worker import standalone
from tests.conftest import HOUSING_CSV, MODELS
from training import payload_data, train_housing
from training.clicklog_schema import load_schema
from training.contract import AD_CLICK
from training.data_adclick import generate, write_csv
from training.data_clicklogs import write_log
from training.data_housing import load_housing
from training.data_tabular import column, read_tabular_csv
from training.train_clicklog import _declared


def _impression(row: dict[str, str]) -> dict:
    return {f.name: int(float(row[column(f)])) for f in AD_CLICK.numeric} | {
        f.name: row[column(f)] if f.values is not None else int(row[column(f)]) for f in AD_CLICK.categorical
    }


async def _serve(logs: Path, calls: list[tuple[str, dict, list]]) -> list[str]:
    """Each (model, request or batch, outcomes) served and its outcomes posted back (None: none posted).
    Returns the request ids."""
    app = standalone(Settings(models_dir=MODELS, payload_log_dir=logs))
    ids = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for model, body, _ in calls:
            r = await c.post(f"/v1/{model}/predict{'-batch' if 'houses' in body else ''}", json=body)
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-bentoml-request-id"])
        for request_id, (model, _, outcomes) in zip(ids, calls, strict=True):
            if outcomes is None:
                continue
            feedback = {"request_id": request_id, **({"outcomes": outcomes} if len(outcomes) > 1 else
                                                     {"outcome": outcomes[0]})}  # fmt: skip
            for _ in range(100):  # the payload log's writer records predictions in its own thread
                r = await c.post(f"/v1/{model}/feedback", json=feedback)
                if r.status_code != 404:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 200 and r.json()["counted"], r.text
    for _ in range(100):  # every entry on disk
        if sum(1 for p in logs.glob("payloads-*.jsonl*") for _ in p.open()) == len(calls):
            return ids
        await asyncio.sleep(0.05)
    raise AssertionError("the payload log never held every request")


def test_logged_sales_with_their_prices_are_read_by_the_trainer_as_the_sales_themselves(tmp_path):
    original = load_housing(HOUSING_CSV)
    latest = original.take(np.arange(len(original)) >= len(original) - 60)  # real sales, as a later month brings
    houses, prices = house_requests(latest), [float(p) for p in latest.extra["price"]]
    calls = [("housing-price", h, [p]) for h, p in zip(houses[:40], prices[:40], strict=True)]
    calls.append(("housing-price", {"houses": houses[40:45]}, prices[40:45]))
    calls += [("housing-price", h, None) for h in houses[45:]]  # never sold, or not told: not training data
    logs = tmp_path / "logs"
    asyncio.run(_serve(logs, calls))

    out = tmp_path / "logged.csv"
    assert payload_data.main(["--logs", str(logs), "--model", str(MODELS / "housing-price"), "--out", str(out)]) == 0
    logged = load_housing(out)
    sent = latest.take(np.arange(60) < 45)
    assert len(logged) == 45 and logged.dropped == 0
    order = np.lexsort([sent.extra["price"], sent.numeric[:, 0]])  # the log's order is the time of the request
    back = np.lexsort([logged.extra["price"], logged.numeric[:, 0]])
    assert np.array_equal(logged.numeric[back], sent.numeric[order])
    assert np.array_equal(logged.categorical[back], sent.categorical[order])
    assert np.array_equal(logged.extra["price"][back], sent.extra["price"][order])

    # --base: the model's own sales first, the logged ones added; the trainer runs on it
    both = tmp_path / "both.csv"
    args = [
        "--logs",
        str(logs),
        "--model",
        str(MODELS / "housing-price"),
        "--out",
        str(both),
        "--base",
        str(HOUSING_CSV),
    ]
    assert payload_data.main(args) == 0
    assert len(load_housing(both)) == len(original) + 45
    assert train_housing.main(["--dry-run", "--data", str(both), "--out", str(tmp_path / "model")]) == 0


def test_logged_impressions_with_their_clicks_in_the_ad_click_trainers_layout(tmp_path):
    source = write_csv(generate(200, seed=3), tmp_path / "impressions.csv")
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    calls = [("ad-click", _impression(r), [r["clicked"] == "1"]) for r in rows[:150]]
    calls += [("ad-click", _impression(r), None) for r in rows[150:]]
    logs = tmp_path / "logs"
    asyncio.run(_serve(logs, calls))
    out = tmp_path / "logged.csv"
    assert payload_data.main(["--logs", str(logs), "--model", str(MODELS / "ad-click"), "--out", str(out)]) == 0
    extra = {"timestamp": float, "clicked": int}
    logged, sent = read_tabular_csv(out, AD_CLICK, extra), read_tabular_csv(source, AD_CLICK, extra)
    assert len(logged) == 150
    assert np.array_equal(logged.numeric, sent.numeric[:150])  # requests sent one after another: in order
    assert np.array_equal(logged.categorical, sent.categorical[:150])
    assert np.array_equal(logged.extra["clicked"], sent.extra["clicked"][:150])


def test_a_click_log_model_gets_its_log_back_line_for_line(tmp_path):
    """A model trained from a log in the Avazu layout: the exported lines are the log's own lines (the
    row id, which the model ignores, left empty; the hour from the request's time)."""
    schema = load_schema("avazu")
    card_schema = {"delimiter": schema.delimiter, "header": schema.header,
                   "columns": [_declared(c) for c in schema.columns]}  # fmt: skip
    log = write_log(generate(50, seed=5), "avazu", tmp_path / "log.csv")
    lines = list(csv.DictReader(log.open(newline="")))
    rows = []
    for line in lines:
        hour = line["hour"]  # YYMMDDHH
        at = np.datetime64(f"20{hour[:2]}-{hour[2:4]}-{hour[4:6]}T{hour[6:]}:17:00").astype("datetime64[s]")
        request = {k: v for k, v in line.items() if k not in ("id", "click", "hour")}
        rows.append(payload_data.Row(float(at.astype(np.int64)), request, int(line["click"])))
    out = tmp_path / "back.csv"
    payload_data.write_clicklog(rows, card_schema, out)
    back = list(csv.DictReader(out.open(newline="")))
    assert back == [{**line, "id": ""} for line in lines]


def test_nothing_to_export_or_a_photo_model_is_one_line_and_exit_2(tmp_path, capsys):
    logs = tmp_path / "logs"
    asyncio.run(_serve(logs, [("housing-price", house_requests(load_housing(HOUSING_CSV))[0], None)]))
    out = tmp_path / "out.csv"
    assert payload_data.main(["--logs", str(logs), "--model", str(MODELS / "housing-price"), "--out", str(out)]) == 2
    assert "1 logged housing-price request(s), none with an outcome" in capsys.readouterr().err
    assert payload_data.main(["--logs", str(logs), "--model", str(MODELS / "image-tagging"), "--out", str(out)]) == 2
    assert "cannot be turned back into training data" in capsys.readouterr().err
    assert payload_data.main(["--logs", str(tmp_path), "--model", str(MODELS / "ad-click"), "--out", str(out)]) == 2
    assert "no payloads-*.jsonl files" in capsys.readouterr().err
    assert not out.exists()
