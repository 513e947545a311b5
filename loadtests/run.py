"""Headless, time-bounded Locust run against nnserve, with the server's own view and an SLO check.

    python -m loadtests.run [--url URL] [--duration 60] [--users 24] [--slo loadtests/slo.toml]
    (or: make loadtest DURATION=60 USERS=24 URL=...)

Without --url it starts `bentoml serve` on a free port over the committed models. It writes Locust's
CSV and HTML report to reports/<time>/, scrapes /metrics before and after and prints what the server
saw (requests by endpoint and status, latency quantiles from its histograms, adaptive batch sizes),
and exits 1 when an SLO is breached. Load goes to 127.0.0.1 only and stops after --duration.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtests.serving import REPO, bentoml_serve

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Quantile from cumulative histogram buckets [(upper bound, count)], interpolated within a bucket."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def server_view(before: dict, after: dict) -> list[str]:
    """What the server counted during the run on the API routes (/v1, /v2): requests by status, latency
    quantiles from the duration histograms."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    lines = ["server side (/metrics deltas):"]
    requests: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    batch: dict[str, dict[float, float]] = {}
    for (name, labels), value in delta.items():
        labels = dict(labels)
        endpoint = labels.get("endpoint", "")
        if name == "bentoml_service_request_total" and value > 0 and endpoint.startswith("/v"):
            requests.setdefault(endpoint, {})[labels["http_response_code"]] = value
        elif name == "bentoml_service_request_duration_seconds_bucket" and endpoint.startswith("/v"):
            bound = float(labels["le"])
            buckets.setdefault(endpoint, {})[bound] = buckets.get(endpoint, {}).get(bound, 0.0) + value
        elif name.endswith("adaptive_batch_size_bucket"):
            batch.setdefault(labels.get("method_name", "?"), {})[float(labels["le"])] = value
    for endpoint in sorted(requests):
        statuses = ", ".join(f"{code}: {int(n)}" for code, n in sorted(requests[endpoint].items()))
        cumulative = sorted(buckets.get(endpoint, {}).items())
        qs = "  ".join(f"p{int(q * 100)} {_quantile(cumulative, q) * 1000:.1f} ms" for q in (0.5, 0.95, 0.99))
        lines.append(f"  {endpoint:42s} {statuses:24s} {qs}")
    if batch:
        for method, b in sorted(batch.items()):
            lines.append(f"  adaptive batch size {method}: p50 {_quantile(sorted(b.items()), 0.5):.1f}")
    else:
        lines.append("  adaptive batching: none recorded (no batchable endpoint was used)")
    return lines


def read_stats(out: Path) -> dict[str, dict[str, str]]:
    """Locust's per-endpoint stats of a run that wrote its CSV into `out`, by name ("Aggregated": all)."""
    with open(out / "locust_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def check_slo(stats: dict[str, dict[str, str]], slo: dict) -> list[str]:
    """Breaches of the SLO in Locust's per-endpoint stats (read_stats); empty when it held."""
    breaches = []
    total = stats["Aggregated"]
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    if requests == 0:
        breaches.append("no request completed")
    elif failures / requests > slo.get("max_failure_ratio", 0.0):
        breaches.append(f"{failures} of {requests} requests failed")
    for row in stats.values():
        limit = slo.get("p99_ms", {}).get(row["Name"])
        if limit is not None and row["99%"] not in ("N/A", "") and float(row["99%"]) > limit:
            breaches.append(f"{row['Name']}: p99 {row['99%']} ms > {limit} ms")
    return breaches


def locust(locustfile: Path | list[Path], url: str, users: int, spawn_rate: float, seconds: int, out: Path,
           env: dict[str, str] | None = None) -> LocustRun:  # fmt: skip
    """Starts headless Locust (a child process) with CSV and HTML reports in `out`; bounded in time. Several
    locustfiles run their users side by side (by their weights); `env` is added to the child's environment."""
    files = ",".join(str(f) for f in (locustfile if isinstance(locustfile, list) else [locustfile]))
    command = [
        sys.executable, "-m", "locust", "-f", files, "--headless", "--host", url,
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", f"{seconds}s",
        "--stop-timeout", "5", "--csv", str(out / "locust"), "--html", str(out / "report.html"), "--only-summary",
    ]  # fmt: skip
    with open(out / "locust.log", "w") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})})  # fmt: skip
    return LocustRun(process, out / "locust.log", seconds + 120)


@dataclass
class LocustRun:
    process: subprocess.Popen
    log: Path
    limit_s: float

    def stop(self, limit_s: float = 60) -> str:
        """Ends the run now and waits for it (killing it past limit_s); returns its summary table.

        SIGTERM, not SIGINT: Locust handles SIGTERM in a greenlet of its own (it stops the users, prints the
        summary, closes its CSV files, as at the end of --run-time). A SIGINT is a KeyboardInterrupt raised in
        whichever greenlet runs at that moment, and a user's or the CSV writer's greenlet can swallow it: the
        run then went on to its --run-time (ten minutes of each Swarm scenario, seen on 2026-12-04)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(limit_s)

    def wait(self, limit_s: float | None = None) -> str:
        """Waits for Locust to end (killing it past its limit); returns its summary table."""
        try:
            self.process.wait(timeout=self.limit_s if limit_s is None else limit_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        lines = self.log.read_text().splitlines()
        start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("Type ")), len(lines))
        return "\n".join(lines[start:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service; default: start one on a free port")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--users", type=int, default=24, help="concurrent Locust users (default 24)")
    parser.add_argument("--spawn-rate", type=float, default=8.0)
    parser.add_argument("--slo", type=Path, default=Path(__file__).with_name("slo.toml"))
    parser.add_argument("--reports", type=Path, default=REPO / "reports")
    args = parser.parse_args(argv)
    slo = tomllib.loads(args.slo.read_text())
    out = args.reports / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        url = args.url or stack.enter_context(bentoml_serve(REPO / "models"))
        if not url.startswith(("http://127.", "http://localhost")):
            parser.error("load goes to this machine only: --url must be http://127.x.x.x:PORT or http://localhost:PORT")
        before = scrape(url)
        print(f"load: {args.users} users for {args.duration} s against {url}; reports in {out}")
        log = locust(LOCUSTFILE, url, args.users, args.spawn_rate, args.duration, out).wait()
        after = scrape(url)
    print(log)
    print("\n".join(server_view(before, after)))
    breaches = check_slo(read_stats(out), slo)
    for b in breaches:
        print(f"SLO BREACHED: {b}")
    print("SLO held" if not breaches else f"{len(breaches)} SLO breach(es); reports in {out}")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
