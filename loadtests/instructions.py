"""`make instructions`: what one request costs a worker, counted in instructions, not timed (valgrind).

    python -m loadtests.instructions [--scenario housing-1row] [--requests 800] [--connections 8]
    (make instructions SCENARIO=...)

A change of a few microseconds a request is lost in this shared machine's noise when timed: two identical
stacks differ by 10-12% in one `make bench` run. Counted, it is not: the same code counts the same to
about 0.3% run to run. Here one worker's HTTP path runs in one process as the server runs it: uvicorn's
httptools protocol with nnserve's bounds (service/glue/http_protocol.py), its proxy-headers layer,
Starlette's app with the edge as its middleware (access log and request series on, as BentoML's
configuration has them), the data plane and the committed models, with Prometheus in multiprocess mode.
The connections are in memory: each of `--connections` sends the scenario's request (make bench's body
and headers), all in one turn of the event loop, as wrk's load arrives; their answers are awaited; again,
for `--requests` in all. valgrind's callgrind counts only that part, in every thread of the process.

Not counted: system calls and the kernel (the floor's too), and the worker's periodic tasks (the models'
folder watched, drift shared), which are stopped: they run by the clock, and under valgrind, 50 times
slower, a second of them would fall on 50 times fewer requests. Beside nnserve, the same run counts the
floor (make bench's `floor` row: a bare ASGI app that runs the graph once) and the bare server (the floor
without the graph), under the same protocol. Instructions are not time (a cache miss costs more than an
add), so a change it shows is then confirmed with `make bench --against`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests.paths import MODELS, REPO

# What the child serves: ours; the floor; the floor without its graph (uvicorn's request cycle and a bare ASGI
# app); httptools alone (a protocol that parses the request and writes a fixed answer: no ASGI, no task).
STACKS = ("nnserve", "floor", "server", "httptools")


# --- the parent: runs each stack under callgrind and reads its count -----------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        import uvloop

        uvloop.run(child(argv[1], Path(argv[2]), int(argv[3]), int(argv[4])))
        return 0
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--scenario", default="housing-1row", help="a make bench HTTP scenario on the committed models")
    args.add_argument("--requests", type=int, default=800, help="counted requests per stack (after a warm-up)")
    args.add_argument("--connections", type=int, default=8, help="requests sent together in each turn")
    args.add_argument("--stacks", default=",".join(STACKS), help=f"a comma list of {', '.join(STACKS)}")
    opts = args.parse_args(argv)
    requests = max(1, opts.requests // opts.connections) * opts.connections  # whole turns
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    from loadtests.bench import scenarios  # here: the child, under valgrind, only reads what this writes

    scenario = next((s for s in scenarios() if s.name == opts.scenario and s.models == "committed"), None)
    if scenario is None or scenario.grpc:
        sys.exit(f"{opts.scenario}: not an HTTP scenario on the committed models")
    counts = {}
    for stack in opts.stacks.split(","):
        headers = {"Content-Type": scenario.content_type, **scenario.headers}
        if stack != "nnserve":  # the floor reads its rows from a header, not the body (bench.py does the same)
            headers["X-Floor-Rows"] = str(scenario.graph_rows or scenario.per_request)
        lines = [f"POST {scenario.route} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()),
                 f"Content-Length: {len(scenario.body)}", "", ""]  # fmt: skip
        request = "\r\n".join(lines).encode() + scenario.body
        counts[stack] = count(stack, request, requests, opts.connections, scenario.tagger)
        print(f"{stack}: {counts[stack]:,.0f} instructions a request", flush=True)
    if "nnserve" in counts and "floor" in counts:
        ours, floor = counts["nnserve"], counts["floor"]
        print(f"nnserve - floor: {ours - floor:,.0f} ({ours / floor:.2f}x the floor)")
    return 0


def count(stack: str, request: bytes, requests: int, connections: int, tagger: str) -> float:
    """Instructions per request of `stack` serving `request`, counted by callgrind in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        control = Path(tmp)
        (control / "request").write_bytes(request)
        out = control / "callgrind.out"
        env = {**os.environ, "NNSERVE_MODELS_DIR": str(MODELS), "BENCH_TAGGER": tagger or "image-tagging",
               "PROMETHEUS_MULTIPROC_DIR": str(control / "prometheus"), "PYTHONPATH": str(REPO)}  # fmt: skip
        (control / "prometheus").mkdir()
        with open(control / "log", "w") as log:
            child = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", sys.executable,
                 "-m", "loadtests.instructions", "--child", stack, str(control), str(requests), str(connections)],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        try:
            wait_for(control / "ready", child, control)
            subprocess.run(["callgrind_control", "-i", "on", str(child.pid)], check=True, capture_output=True)
            (control / "go").touch()
            wait_for(control / "done", child, control)
            subprocess.run(["callgrind_control", "-i", "off", str(child.pid)], check=True, capture_output=True)
            (control / "go").unlink()
            child.wait(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
        totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")]
        answered = json.loads((control / "done").read_text())
        if answered["requests"] != requests or answered["status"] != [200]:
            sys.exit(f"{stack}: answered {answered}, expected {requests} answers of 200")
        return int(totals[0].split()[1]) / requests


def wait_for(path: Path, child: subprocess.Popen, control: Path, deadline_s: float = 900) -> None:
    end = time.monotonic() + deadline_s
    while not path.exists():
        if child.poll() is not None or time.monotonic() > end:
            sys.exit(f"the counted process stopped or hung; its log:\n{(control / 'log').read_text()[-3000:]}")
        time.sleep(0.2)


# --- the child: one worker's HTTP path over in-memory connections, counted between "go" and "done" ----------
class Connection:
    """The transport uvicorn's protocol writes to: it keeps nothing, and says when an answer is complete."""

    def __init__(self, answered: Callable[[bytes], None]) -> None:
        self.answered, self.waiting = answered, None

    def write(self, data: bytes) -> None:
        self.answered(data)
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)

    def writelines(self, data: Any) -> None:
        self.write(b"".join(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:  # a refused request (uvicorn answers some refusals with a close): counted as one
        self.write(b"HTTP/1.1 000 closed")

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...  # fmt: skip


async def child(stack: str, control: Path, requests: int, connections: int) -> None:
    import logging
    from collections import Counter

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from service.glue import http_protocol, patches
    from service.protocol.edge import Edge
    from service.settings import load_settings
    from service.worker import Worker, auth

    # The access log's lines go where BentoML's handler would write them, a stream (here: /dev/null).
    access = logging.getLogger("bentoml.access")
    access.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115 - open until the process exits
    access.setLevel(logging.INFO)
    access.propagate = False
    settings = load_settings()
    limits = http_protocol.Limits(settings.max_header_bytes, settings.max_headers, settings.header_timeout_s)
    http_protocol.install(limits)
    worker = Worker(settings)
    tasks = worker.start()
    if stack == "nnserve":  # BentoML's app, its one middleware the edge (service/app.py), its access log and series
        edge = Middleware(Edge, settings=settings, auth=auth(settings), worker=lambda: worker,  # type: ignore[arg-type]
                          observe=patches.observe, admission=worker.admission,
                          on_start=http_protocol.answer_directly)  # fmt: skip
        app: Any = Starlette(middleware=[edge])
    else:
        import loadtests.reference_apps as reference

        if stack == "server":
            reference._floor_run = lambda path, rows: None
        app = reference.floor_app
    config = Config(app=app, http="httptools", loop="uvloop", log_config=None, lifespan="off")
    config.load()
    state, statuses = ServerState(), Counter()
    loop = asyncio.get_running_loop()
    held = []  # the lifespan's task: one no one refers to may be collected
    if stack == "nnserve":  # the lifespan's start, which makes the edge's access log and series; it stays open
        started = loop.create_future()

        async def lifespan_send(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set_result(None)

        held.append(loop.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, _lifespan(), lifespan_send)))
        await started

    def answered(data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 "):
            statuses[int(data[9:12])] += 1

    pairs = []
    for _ in range(connections):
        made = Bare if stack == "httptools" else http_protocol.GuardedHttpTools
        protocol = made(config=config, server_state=state, app_state={})
        transport = Connection(answered)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        pairs.append((protocol, transport))
    request = (control / "request").read_bytes()

    async def send(n: int) -> None:
        for _ in range(n // connections):
            waiting = []
            for protocol, transport in pairs:
                transport.waiting = loop.create_future()
                waiting.append(transport.waiting)
                protocol.data_received(request)
            await asyncio.gather(*waiting)
            await asyncio.sleep(0)  # the answers' last callbacks (the response complete)

    for task in tasks:  # the clock's work, not a request's (see the module's docstring)
        task.cancel()
    await send(max(connections, 200))  # warm: first requests build series, caches, routes
    statuses.clear()
    (control / "ready").touch()
    while not (control / "go").exists():
        await asyncio.sleep(0.05)
    await send(requests)
    (control / "done").write_text(json.dumps({"requests": sum(statuses.values()), "status": sorted(statuses)}))
    while (control / "go").exists():
        await asyncio.sleep(0.05)
    os._exit(0)  # without the exit's own work (atexit flushes) in the count


class Bare:
    """HTTP/1.1 at its least in Python: httptools parses, the answer is fixed and written when the request
    has been read. What uvicorn's request cycle (an ASGI scope, a task, receive and send) adds is above it."""

    ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def __init__(self, **_: Any) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(self.ANSWER)


def _lifespan() -> Callable[[], Any]:
    messages = [{"type": "lifespan.startup"}]

    async def receive() -> Any:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # no shutdown: the process exits

    return receive


if __name__ == "__main__":
    sys.exit(main())
