"""Long runs: is resident memory flat, does the p99 stay put, does anything fail?

    python -m loadtests.soak [--minutes 10]                    (or: make soak)
    python -m loadtests.soak --housing [--minutes 5]           (or: make soak-housing)

Mixed (the default): the Locust users of `make loadtest` (all three models, single and batch
requests, every answer checked) in back-to-back one-minute slices. After each slice it prints that
minute's requests, failures, p99 per endpoint and the resident memory of the service's processes.
It exits 1 when any request failed or memory grew 5% or more after the first minute (warm-up).

--housing: wrk on `POST /v1/housing-price/predict` with 16 connections in 30 s slices (the bench's
scenario 1), per slice p50/p99 and memory; it reports and does not judge latency (the machine is
shared and noisy). Both append their series' summary to loadtests/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from loadtests.bench import RESULTS, machine, scenarios, wrk
from loadtests.run import LOCUSTFILE, locust, read_stats
from loadtests.serving import REPO, bentoml_serve, service_rss_mb

MAX_RSS_GROWTH = 0.05


def mixed_minute(url: str, users: int, out: Path) -> dict:
    """One minute of the mixed Locust load: requests, failures, p99 per endpoint."""
    out.mkdir(parents=True)
    locust(LOCUSTFILE, url, users, users, 60, out).wait()
    rows = read_stats(out)
    total = rows.pop("Aggregated")
    return {
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "p99": {name: float(r["99%"]) for name, r in rows.items() if r["99%"] not in ("", "N/A")},
    }


def soak_mixed(minutes: int, users: int, reports: Path) -> tuple[list[dict], str, bool]:
    rows = []
    with bentoml_serve(REPO / "models") as url:
        for minute in range(1, minutes + 1):
            result = mixed_minute(url, users, reports / f"minute-{minute:02d}")
            rows.append({**result, "rss_mb": service_rss_mb(url), "minute": minute})
            worst = max(result["p99"].items(), key=lambda kv: kv[1])
            print(f"minute {minute:2d}: {result['requests']:6d} requests, {result['failures']} failed, "
                  f"RSS {rows[-1]['rss_mb']:6.1f} MB, p99 "
                  + ", ".join(f"{name.removeprefix('/v1/')} {p:.0f}" for name, p in sorted(result["p99"].items()))
                  + f" ms (worst {worst[0]})", flush=True)  # fmt: skip
    warm = rows[1:] or rows
    growth = (max(r["rss_mb"] for r in warm) - warm[0]["rss_mb"]) / warm[0]["rss_mb"]
    failures = sum(r["failures"] for r in rows)
    requests = sum(r["requests"] for r in rows)
    worst_p99 = [max(r["p99"].values()) for r in warm]
    summary = (
        f"{requests} requests, {failures} failed; RSS after the first minute {warm[0]['rss_mb']:.1f} MB, "
        f"highest {max(r['rss_mb'] for r in warm):.1f} MB ({growth:+.1%}); worst endpoint p99 per minute "
        f"{min(worst_p99):.0f}-{max(worst_p99):.0f} ms (first {worst_p99[0]:.0f}, last {worst_p99[-1]:.0f})"
    )
    held = failures == 0 and growth < MAX_RSS_GROWTH
    return rows, summary, held


def soak_housing(minutes: float, slice_s: int) -> str:
    housing = scenarios()[0]
    rows = []
    with bentoml_serve(REPO / "models") as url:
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            result = wrk(url, housing, slice_s)
            rows.append({**result, "rss_mb": service_rss_mb(url), "t": len(rows) * slice_s + slice_s})
            r = rows[-1]
            print(f"t={r['t']:4d}s  {r['throughput']:7.0f} req/s  p50 {r['p50']:5.2f} ms  p99 {r['p99']:6.2f} ms  "
                  f"RSS {r['rss_mb']:6.1f} MB  non-2xx {r['non_2xx']}", flush=True)  # fmt: skip
    warm = [r for r in rows if r["t"] > 60] or rows
    growth = (warm[-1]["rss_mb"] - warm[0]["rss_mb"]) / warm[0]["rss_mb"]
    p99s = [r["p99"] for r in warm]
    return (
        f"after warm-up (t > 60 s): RSS {warm[0]['rss_mb']:.1f} -> {warm[-1]['rss_mb']:.1f} MB ({growth:+.1%}); "
        f"p99 per slice {min(p99s):.2f}-{max(p99s):.2f} ms (first {p99s[0]:.2f}, last {p99s[-1]:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--housing", action="store_true", help="wrk on the housing endpoint instead of mixed load")
    parser.add_argument("--minutes", type=float, help="default: 10 mixed, 5 housing")
    parser.add_argument("--users", type=int, default=24, help="Locust users of the mixed load (default 24)")
    parser.add_argument("--slice", type=int, default=30, help="seconds per wrk run (--housing)")
    parser.add_argument("--reports", type=Path, default=REPO / "reports")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    if args.housing:
        minutes = args.minutes or 5
        summary, held = soak_housing(minutes, args.slice), True
        what = f"housing-1row, 16 connections (wrk), {minutes:g} min in {args.slice} s slices"
    else:
        minutes = int(args.minutes or 10)
        reports = args.reports / time.strftime("soak-%Y%m%d-%H%M%S")
        _, summary, held = soak_mixed(minutes, args.users, reports)
        what = f"mixed load (Locust, {args.users} users, all endpoints of make loadtest), {minutes} x 1 min"
    print(summary)
    if not args.no_record:
        with open(RESULTS, "a") as f:
            f.write(f"## soak {time.strftime('%Y-%m-%d %H:%M')} UTC, {machine()}\n\n{what}: {summary}\n\n")
    if not held:
        print(f"SOAK FAILED: failures, or memory grew {MAX_RSS_GROWTH:.0%} or more after the first minute")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
