"""`make profile`: where one worker's CPU goes under a bench scenario's load (py-spy, a flame graph).

    python -m loadtests.profile [--scenario housing-1row] [--seconds 10] [--out docs/perf-housing-flame.svg]
    (make profile SCENARIO=... OUT=...)

nnserve (`bentoml serve`, the production configuration) on a free port with its worker count, wrk (h2load
for a gRPC scenario) sending the scenario's request as `make bench` does, and py-spy sampling one worker
(200 Hz, without stopping it) for `--seconds` once the load is under way. The SVG is py-spy's flame graph;
`--raw` writes its collapsed stacks instead (one line a stack, for sums by function). docs/performance.md
reads one.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from loadtests.bench import scenarios, wrk
from loadtests.grpc_load import h2load
from loadtests.paths import MODELS, REPO
from loadtests.ports import free_port
from loadtests.serving import bentoml_serve, server_processes


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--scenario", default="housing-1row", help="a make bench scenario (HTTP or gRPC)")
    args.add_argument("--seconds", type=int, default=10)
    args.add_argument("--out", type=Path, help="default: reports/profile-<scenario>.svg (.txt with --raw)")
    args.add_argument("--raw", action="store_true", help="collapsed stacks instead of an SVG")
    opts = args.parse_args(argv)
    scenario = next((s for s in scenarios() if s.name == opts.scenario and s.models == "committed"), None)
    if scenario is None:
        sys.exit(f"{opts.scenario}: not a scenario on the committed models")
    out = opts.out or REPO / "reports" / f"profile-{opts.scenario}.{'txt' if opts.raw else 'svg'}"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not installed (make profile installs it)")
    port = free_port()
    with bentoml_serve(MODELS, NNSERVE_GRPC_PORT=str(port)) as url:

        def send(seconds: int) -> None:
            if scenario.grpc:
                h2load(f"127.0.0.1:{port}", scenario.body, scenario.connections, seconds, scenario.per_request)
            else:
                wrk(url, scenario, seconds)

        send(2)  # warmed up
        worker = server_processes(url)[-1].pid  # a worker (the server's last descendant)
        load = threading.Thread(target=send, args=(opts.seconds + 4,))
        load.start()
        command = [spy, "record", "-p", str(worker), "-d", str(opts.seconds), "-r", "200", "--nonblocking",
                   "-o", str(out), *(["-f", "raw"] if opts.raw else [])]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=opts.seconds + 60)
        load.join()
    print(f"{opts.scenario}: one worker (pid {worker}) for {opts.seconds} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
