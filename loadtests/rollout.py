"""A rollout under load: Locust sends housing predictions while versions are swapped, rolled back,
canaried, promoted and refused, and no request may fail.

    python -m loadtests.rollout [--seconds 60] [--record]        (or: make rollout)

It starts `bentoml serve` (two workers, the watch every 0.5 s, management on) over a temporary
models directory holding housing-price version 1, and while Locust runs (8 users, no pause):

1. swap:     version 2 (a copy whose graph answers 1.1x) is copied in; the policy "latest" serves it;
2. rollback: PUT /v1/models/housing-price/policy {"default": "1"};
3. canary:   {"default": "1", "canary": {"version": "2", "weight": 25}};
4. broken:   version 3 copied in with an ONNX file that is not the one its card describes: refused;
5. promote:  {"default": "2"};
6. shadow:   {"default": "2", "shadow": {"version": "1", "sample": 1.0}}, held for 3 s.

Each step is done when every worker's /v1/health says so (the convergence time). It exits 1 unless
every request was a 200 answered by version 1 or 2 (Locust counts anything else as a failure) and
version 3 was refused. It prints requests, failures, each step's convergence, and the p99 of the
answers that started in the swap (from the copy until every worker serves version 2) against the
p99 before it, and the p99 while the shadow runs on every request; --record appends them to
loadtests/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from loadtests.bench import RESULTS, machine
from loadtests.run import locust, read_stats, scrape
from loadtests.serving import REPO, add_version, bentoml_serve, everywhere

USERS = Path(__file__).with_name("rollout_users.py")
SHADOW_HOLD_S = 3.0
HOUSING = REPO / "models" / "housing-price"
ENV = {
    "NNSERVE_WORKERS": "2",
    "NNSERVE_MODEL_POLL_S": "0.5",
    "NNSERVE_MANAGEMENT": "true",
    "NNSERVE_ACCESS_LOG": "false",
}


def _policy(url: str, policy: dict) -> None:
    r = httpx.put(url + "/v1/models/housing-price/policy", json=policy, timeout=30)
    r.raise_for_status()


def _serving(**want: object):
    def check(health: dict) -> bool:
        serving = health["models"]["housing-price"]
        return all(serving.get(k) == v for k, v in want.items())

    return check


def steps(url: str, models: Path) -> list[tuple[str, float, float]]:
    """The rollout's steps: (name, started at, seconds until every worker had it)."""
    folder = models / "housing-price"
    done = []

    def step(name: str, act, check) -> None:
        started = time.time()
        act()
        done.append((name, started, everywhere(url, check, deadline_s=60)))

    step("swap to version 2", lambda: add_version(folder, HOUSING, "2", scale=1.1), _serving(versions=["2"]))
    step("roll back to version 1", lambda: _policy(url, {"default": "1"}), _serving(default="1"))
    canary = {"default": "1", "canary": {"version": "2", "weight": 25}}
    step(
        "canary: version 2 takes 25%",
        lambda: _policy(url, canary),
        _serving(canary=canary["canary"] | {"weight": 25.0}),
    )
    step("broken version 3 refused", lambda: add_version(folder, HOUSING, "3", breakage="sha"),
         lambda h: h["refused"] == {"housing-price": ["3"]})  # fmt: skip
    step("promote version 2", lambda: _policy(url, {"default": "2"}), _serving(default="2", versions=["2"]))
    shadow = {"default": "2", "shadow": {"version": "1", "sample": 1.0}}
    step("shadow: version 1 on every request", lambda: _policy(url, shadow), _serving(default="2", versions=["2", "1"]))
    time.sleep(SHADOW_HOLD_S)  # the window in which every request also runs the shadow
    return done


def shadow_counts(url: str) -> tuple[int, int]:
    """Shadow runs made and skipped (busy or failed), from /metrics."""
    samples = scrape(url)
    made = sum(v for (name, _), v in samples.items() if name == "nnserve_shadow_difference_count")
    skipped = sum(v for (name, _), v in samples.items() if name == "nnserve_shadow_skipped_total")
    return int(made), int(skipped)


def p99_ms(trace: np.ndarray, start: float, end: float) -> float:
    inside = trace[(trace[:, 0] >= start) & (trace[:, 0] < end), 1]
    return float(np.percentile(inside, 99) * 1000) if len(inside) else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--seconds", type=int, default=60, help="how long Locust runs (the steps take ~1/2 of it)")
    args.add_argument("--record", action="store_true", help="append the figures to loadtests/RESULTS.md")
    opts = args.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        models, out = Path(tmp) / "models", Path(tmp) / "locust"
        out.mkdir()
        add_version(models / "housing-price", HOUSING, "1")
        trace_file = Path(tmp) / "trace.csv"
        os.environ.update(NNSERVE_ROLLOUT_TRACE=str(trace_file), NNSERVE_ROLLOUT_VERSIONS="1,2")  # for Locust
        try:
            with bentoml_serve(models, **ENV) as url:
                run = locust(USERS, url, users=8, spawn_rate=8, seconds=opts.seconds, out=out)
                time.sleep(opts.seconds * 0.25)  # a quarter of the run before anything changes: the baseline
                done = steps(url, models)
                made, skipped = shadow_counts(url)
                run.wait()
        finally:
            for name in ("NNSERVE_ROLLOUT_TRACE", "NNSERVE_ROLLOUT_VERSIONS"):
                os.environ.pop(name, None)
        stats = read_stats(out)["Aggregated"]
        trace = np.loadtxt(trace_file, delimiter=",", usecols=(0, 1), ndmin=2)
        versions = sorted({line.rsplit(",", 1)[1].strip() for line in trace_file.read_text().splitlines()})
    requests, failures = int(stats["Request Count"]), int(stats["Failure Count"])
    swap_start, swap_s = done[0][1], done[0][2]
    before, during = p99_ms(trace, trace[0, 0] + 2, swap_start), p99_ms(trace, swap_start, swap_start + swap_s + 1)
    lines = [f"rollout under load: {requests} requests, {failures} failed, answered by versions {versions}"]
    lines += [f"  {name:32s} every worker within {seconds:.2f} s" for name, _, seconds in done]
    lines.append(f"  p99 before the swap {before:.1f} ms, during it {during:.1f} ms ({during / before:.2f}x)")
    shadow_from = done[-1][1] + done[-1][2]
    shadowed = p99_ms(trace, shadow_from, shadow_from + SHADOW_HOLD_S)
    lines.append(f"  p99 with a shadow on every request {shadowed:.1f} ms ({shadowed / before:.2f}x before the swap); "
                 f"shadow runs made {made}, skipped {skipped} (the workers were busy)")  # fmt: skip
    print("\n".join(lines))
    if opts.record:
        with open(RESULTS, "a") as f:
            f.write(
                f"\n## make rollout, {time.strftime('%Y-%m-%d %H:%M')} ({machine()}, {opts.seconds} s, 8 users)\n\n"
            )
            f.write("```\n" + "\n".join(lines) + "\n```\n")
    return 0 if requests and not failures and set(versions) <= {"1", "2"} else 1


if __name__ == "__main__":
    sys.exit(main())
