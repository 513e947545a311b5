"""Two panels of the Grafana dashboard, drawn from a live run: drift and outcome feedback.

    make dashboard-png        (about 4 minutes; writes docs/dashboard-drift.png)

A real `bentoml serve` over the committed models (payload log on, smaller windows so the picture moves
within minutes) and a real Prometheus (Debian's package) scraping it every second. Real King County sales
from the model's validation months are sent in batches, each followed by its real sale prices
(POST /v1/housing-price/feedback): first as they are, then with every house's living area x 1.6, the
shift a data bug or a new market would bring. Then the panels' own PromQL (deploy/grafana/
nnserve-dashboard.json, $model = housing-price) is evaluated over the run by Prometheus's query_range and
drawn with matplotlib the way Grafana draws a time series panel: one line per series, named by the
panel's legendFormat. No Grafana server: Debian has none, and the figures, not the chrome, are the point.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loadtests.paths import HOUSING_CSV, MODELS  # noqa: E402
from loadtests.payloads import house_requests  # noqa: E402
from loadtests.prometheus import DASHBOARD, start_prometheus  # noqa: E402
from loadtests.serving import bentoml_serve  # noqa: E402
from training.data_housing import load_housing, split_by_date  # noqa: E402

PANELS = ("Drift: PSI", "Outcome feedback")  # the titles' beginnings
MODEL = "housing-price"
SHIFT = ("sqft_living", 1.6)
BATCH = 10  # houses per request
SETTINGS = {  # windows small enough that the picture moves within minutes (defaults: 5000 rows, 1 h)
    "NNSERVE_DRIFT_WINDOW_ROWS": "1500",
    "NNSERVE_FEEDBACK_WINDOW": "1500",
}


def sales() -> list[tuple[dict, float]]:
    """The validation months' sales as requests, with their prices."""
    validation = split_by_date(load_housing(HOUSING_CSV))[1]
    return list(zip(house_requests(validation), map(float, validation.extra["price"]), strict=True))


def drive(url: str, houses: list, seconds: float, shift: bool) -> int:
    """Batches of sales, each answered then told its prices, for `seconds`. Returns the rows sent."""
    sent, end, i = 0, time.monotonic() + seconds, 0
    name, factor = SHIFT
    with httpx.Client(base_url=url, timeout=10) as c:
        pending: list[tuple[str, list[float]]] = []
        while time.monotonic() < end:
            chunk = [houses[(i + k) % len(houses)] for k in range(BATCH)]
            i += BATCH
            body = [{**h, name: round(h[name] * factor)} if shift else h for h, _ in chunk]
            r = c.post(f"/v1/{MODEL}/predict-batch", json={"houses": body})
            r.raise_for_status()
            pending.append((r.headers["x-bentoml-request-id"], [p for _, p in chunk]))
            sent += BATCH
            while len(pending) > 20:  # the payload log's writer records a prediction a moment after its answer
                request_id, prices = pending.pop(0)
                c.post(f"/v1/{MODEL}/feedback", json={"request_id": request_id, "outcomes": prices})
            time.sleep(0.02)  # a steady 300-400 rows/s, not a flood: the figures, not the throughput
    return sent


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def draw(prometheus: str, start: float, end: float, phases: list[tuple[float, str]], out: Path) -> None:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"].startswith(PANELS)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), facecolor="#181b1f")
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_facecolor("#181b1f")
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # 14 features and the output: 10 colours repeat
        for target in panel["targets"]:
            query = target["expr"].replace("$model", MODEL)
            params = {"query": query, "start": start, "end": end, "step": 2}
            answer = httpx.get(prometheus + "/api/v1/query_range", params=params, timeout=30).json()
            for series in sorted(answer["data"]["result"], key=lambda s: legend(target["legendFormat"], s["metric"])):
                t = [float(v[0]) - start for v in series["values"]]
                y = [float(v[1]) for v in series["values"]]
                ax.plot(t, y, linewidth=1.6, label=legend(target["legendFormat"], series["metric"]))
        if panel["title"].startswith("Drift"):
            ax.axhline(0.2, color="#f2495c", linestyle="--", linewidth=1, label="threshold 0.2")
        for at, text in phases:
            ax.axvline(at - start, color="#8e8e8e", linewidth=0.8)
            ax.text(at - start + 2, ax.get_ylim()[1] * 0.95, text, color="#ccccdc", fontsize=9, va="top")
        ax.set_title(panel["title"] + f"  ($model = {MODEL})", color="#ccccdc", loc="left", fontsize=11)
        ax.set_xlabel("seconds into the run", color="#8e8e8e")
        ax.tick_params(colors="#8e8e8e")
        ax.grid(color="#2c3235")
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False, labelcolor="#ccccdc")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=fig.get_facecolor())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90, help="each phase's length (default 90)")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard-drift.png"))
    args = parser.parse_args(argv)
    houses = sales()
    work = Path(tempfile.mkdtemp(prefix="nnserve-dashboard-"))
    with bentoml_serve(MODELS, NNSERVE_PAYLOAD_LOG_DIR=str(work / "payloads"), **SETTINGS) as url:
        proc, prometheus = start_prometheus(url.removeprefix("http://"), work)
        try:
            start = time.time()
            normal = drive(url, houses, args.seconds, shift=False)
            shifted_at = time.time()
            shifted = drive(url, houses, args.seconds, shift=True)
            time.sleep(12)  # the online measures are published every 10 s; one more scrape after that
            end = time.time()
            phases = [(start, f"{len(houses):,} real sales, as they are"),
                      (shifted_at, f"the same, {SHIFT[0]} x {SHIFT[1]}")]  # fmt: skip
            draw(prometheus, start, end, phases, args.out)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{args.out}: {normal:,} rows as they are, then {shifted:,} shifted ({SHIFT[0]} x {SHIFT[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
