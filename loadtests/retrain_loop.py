"""The monthly loop a production team runs, on the real King County sales, end to end:

    python -m loadtests.retrain_loop [--out build/retrain-loop] [--dry-run]      (or: make retrain-loop)

1. Version 1 is what the team had at the end of January: trained on the sales through January
   (epochs chosen on January, then refit on every month through it), published into a models
   directory of the loop's own (build/retrain-loop/models; models/ is never touched).
2. February: `bentoml serve` answers every February sale as a client sends it, and each sale's
   price is posted back as its outcome (POST /v1/housing-price/feedback), as a sale closes.
3. The payload log and its outcomes are exported as training data with `training.payload_data`
   (--base: the January file first, so the logged sales add to it).
4. Version 2 is trained on that file: epochs chosen on February, refit on every month through it.
5. March: the service, restarted on a fresh payload log (the online measures are per version over
   its latest joined rows; version 1's would otherwise hold February too), serves version 1 with
   version 2 as a 50% canary, sticky per client key; every March sale is sent, its price posted back.
6. Each version's online MAE from that feedback (the drift route's `online`), with its standard
   error; version 2 is promoted only if its MAE is lower, else the canary is removed.

March is the month neither version trained on: comparing on February would flatter version 2,
which was fit on it. --dry-run trains on a sliver (the trainers' --dry-run) and sends 150 sales a
month: the loop's mechanics in a minute, for the tests; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from loadtests.paths import HOUSING_CSV
from loadtests.payloads import house_requests
from loadtests.serving import REPO, bentoml_serve
from training import payload_data, train_housing
from training.data_housing import load_housing
from training.data_tabular import TabularData, parse_date
from training.export import publish

NAME = "housing-price"
FEBRUARY, MARCH, APRIL = "2015-02-01", "2015-03-01", "2015-04-01"
CANARY_WEIGHT = 50  # percent of client keys: the largest share gives the comparison the most rows per version
DRY_RUN_SALES = 150  # sales sent per month in a dry run
MARKER = ".retrain-loop"  # in the loop's folder: only a folder holding it is replaced by the next run


@dataclass
class Month:
    houses: list[dict]  # the typed requests, as a client sends them (with the sale's own date)
    prices: list[float]


def month(data: TabularData, start: str, end: str, limit: int | None) -> Month:
    dates = data.extra["date"]
    rows = data.take((dates >= start) & (dates < end))
    n = len(rows) if limit is None else min(limit, len(rows))
    rows = rows.take(np.arange(len(rows)) < n)
    return Month(house_requests(rows), [float(p) for p in rows.extra["price"]])


def sales_before(source: Path, end: str, out: Path) -> Path:
    """The lines of the sales file sold before `end`: the data as it stood then."""
    with source.open(newline="", encoding="utf-8") as f, out.open("w", newline="", encoding="utf-8") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, reader.fieldnames or [])
        writer.writeheader()
        writer.writerows(row for row in reader if parse_date(row["date"]).isoformat() < end)
    return out


def train(data: Path, split: str, version: str, out: Path, models: Path, dry_run: bool) -> dict:
    """Trains `version` (epochs chosen on the sales from `split` on, then refit on all) and copies it
    into `models` as that version; its card."""
    argv = ["--data", str(data), "--split", split, "--version", version, "--out", str(out / f"v{version}")]
    code = train_housing.main(argv + (["--dry-run"] if dry_run else []))
    if code != 0:
        raise SystemExit(f"version {version}: the trainer exited {code} (its bar, above); nothing was served")
    (models / NAME).mkdir(parents=True, exist_ok=True)
    publish(out / f"v{version}", models / NAME, version, version)  # models/housing-price/<version>/
    return json.loads((models / NAME / version / "card.json").read_text())


def serve_month(url: str, sales: Month, keys: bool) -> dict[str, list[float]]:
    """Each sale predicted and its price posted back; per answering version, its absolute errors as the
    client saw them (for the standard error of each version's MAE, which the service does not give)."""
    errors: dict[str, list[float]] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for i, (house, price) in enumerate(zip(sales.houses, sales.prices, strict=True)):
            headers = {"X-Request-Key": f"client-{i}"} if keys else {}
            answer = client.post(f"/v1/{NAME}/predict", json=house, headers=headers)
            answer.raise_for_status()
            body = answer.json()
            errors.setdefault(body["version"], []).append(abs(body["price"] - price))
            feedback = {"request_id": answer.headers["x-bentoml-request-id"], "outcome": price}
            client.post(f"/v1/{NAME}/feedback", json=feedback).raise_for_status()
    return errors


def standard_error(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def online(url: str) -> dict[str, dict]:
    """Each version's online measures, as the service answers them (the same from every worker)."""
    return httpx.get(f"{url}/v1/models/{NAME}/drift", timeout=30).json()["online"]


def fresh(out: Path) -> None:
    """An empty `out`: a previous loop's folder (its MARKER file) is replaced; any other folder that
    exists is refused, never deleted."""
    if out.exists():
        if not (out / MARKER).is_file():
            raise SystemExit(f"--out {out}: exists and is not a folder this loop made (no {MARKER} in it): "
                             "give a new folder")  # fmt: skip
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by python -m loadtests.retrain_loop; replaced by its next run\n")


def run(out: Path, dry_run: bool) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    fresh(out)
    models, logs = out / "models", out / "logs"
    limit = DRY_RUN_SALES if dry_run else None
    sales = load_housing(HOUSING_CSV)
    february, march = month(sales, FEBRUARY, MARCH, limit), month(sales, MARCH, APRIL, limit)
    env = {"NNSERVE_WORKERS": "2", "NNSERVE_MANAGEMENT": "true", "NNSERVE_MODEL_POLL_S": "0.5"}

    january_file = sales_before(HOUSING_CSV, FEBRUARY, out / "sales-through-january.csv")
    v1 = train(january_file, "2015-01-01", "1", out, models, dry_run)
    print(f"\nversion 1: fit on {v1['data']['rows']['final_fit']:,} sales through January; "
          f"R² {v1['metrics']['model']['r2']:.4f} on January (the fit that chose the epoch)")  # fmt: skip

    with bentoml_serve(models, NNSERVE_PAYLOAD_LOG_DIR=str(logs / "february"), **env) as url:
        serve_month(url, february, keys=False)
        feb_online = online(url)
    print(f"February: {len(february.prices):,} sales served by version 1, prices posted back: online MAE "
          f"${feb_online['1']['mae']:,.0f} over {feb_online['1']['rows']:,} sales")  # fmt: skip

    through_february = out / "sales-through-february.csv"
    code = payload_data.main(["--logs", str(logs / "february"), "--model", str(models / NAME), "--base",
                              str(january_file), "--out", str(through_february)])  # fmt: skip
    if code != 0:
        return code
    v2 = train(through_february, FEBRUARY, "2", out, models, dry_run)
    print(f"\nversion 2: fit on {v2['data']['rows']['final_fit']:,} sales through February; "
          f"R² {v2['metrics']['model']['r2']:.4f} on February (the fit that chose the epoch)")  # fmt: skip

    with bentoml_serve(models, NNSERVE_PAYLOAD_LOG_DIR=str(logs / "march"), **env) as url:
        policy = {"default": "1", "canary": {"version": "2", "weight": CANARY_WEIGHT}}
        httpx.put(f"{url}/v1/models/{NAME}/policy", json=policy, timeout=60).raise_for_status()
        errors = serve_month(url, march, keys=True)
        measured = online(url)
        better = "2" in measured and "1" in measured and measured["2"]["mae"] < measured["1"]["mae"]
        decision = {"default": "2"} if better else {"default": "1"}
        serving = httpx.put(f"{url}/v1/models/{NAME}/policy", json=decision, timeout=60).json()["serving"]

    print(f"\nMarch, version 2 as a {CANARY_WEIGHT}% canary: {len(march.prices):,} sales sent; online, from the prices "
          "posted back (the service's figures; the standard error from the answers the client saw):")  # fmt: skip
    for version in sorted(measured):
        m = measured[version]
        print(f"  version {version}: MAE ${m['mae']:,.0f} (standard error ${standard_error(errors[version]):,.0f}), "
              f"median abs. error {m['median_ape']:.2%}, over {m['rows']:,} sales")  # fmt: skip
    if "1" in measured and "2" in measured:
        gap = measured["2"]["mae"] - measured["1"]["mae"]
        se = np.hypot(standard_error(errors["1"]), standard_error(errors["2"]))
        print(f"  version 2 - version 1: ${gap:+,.0f} (standard error ${se:,.0f}: the two versions answered "
              "different sales)")  # fmt: skip
    outcome = "promoted version 2" if better else "kept version 1 (version 2 not better)"
    print(f"{outcome}: serving {json.dumps(serving)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "build" / "retrain-loop",
        help="the loop's folder (a previous run's is replaced; any other existing folder is refused)",
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny trainings, 150 sales a month: the mechanics only")
    args = parser.parse_args(argv)
    return run(args.out, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
