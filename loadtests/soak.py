"""A long run of the housing scenario: is resident memory flat, and does the p99 stay put?

    python -m loadtests.soak [--minutes 5] [--slice 30]        (or: make soak)

wrk drives `POST /v1/housing-price/predict` with 16 connections in back-to-back slices; after each
slice it records that slice's p50/p99 and the resident memory of the service's processes. It prints
the series and the growth of memory after the first minute (warm-up), and appends them to
loadtests/RESULTS.md. It reports; it does not judge (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import sys
import time

from loadtests.bench import RESULTS, machine, scenarios, wrk
from tests.serving import REPO, bentoml_serve, server_processes


def service_rss_mb(url: str) -> float:
    """Resident memory of the `bentoml serve` at `url`: the server process and its workers."""
    return sum(p.memory_info().rss for p in server_processes(url) if p.is_running()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--slice", type=int, default=30, help="seconds per wrk run")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    housing = scenarios()[0]
    rows = []
    with bentoml_serve(REPO / "models") as url:
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            result = wrk(url, housing, args.slice)
            rows.append({**result, "rss_mb": service_rss_mb(url), "t": len(rows) * args.slice + args.slice})
            r = rows[-1]
            print(f"t={r['t']:4d}s  {r['throughput']:7.0f} req/s  p50 {r['p50']:5.2f} ms  p99 {r['p99']:6.2f} ms  "
                  f"RSS {r['rss_mb']:6.1f} MB  non-2xx {r['non_2xx']}", flush=True)  # fmt: skip
    warm = [r for r in rows if r["t"] > 60] or rows
    growth = (warm[-1]["rss_mb"] - warm[0]["rss_mb"]) / warm[0]["rss_mb"]
    p99s = [r["p99"] for r in warm]
    summary = (
        f"after warm-up (t > 60 s): RSS {warm[0]['rss_mb']:.1f} -> {warm[-1]['rss_mb']:.1f} MB ({growth:+.1%}); "
        f"p99 per slice {min(p99s):.2f}-{max(p99s):.2f} ms (first {p99s[0]:.2f}, last {p99s[-1]:.2f})"
    )
    print(summary)
    if not args.no_record:
        with open(RESULTS, "a") as f:
            f.write(f"## soak {time.strftime('%Y-%m-%d %H:%M')} UTC, {machine()}\n\n")
            f.write(f"housing-1row, 16 connections, {args.minutes:g} min in {args.slice} s slices: {summary}\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
