"""A real `bentoml serve` process on a free port, for integration tests and load tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from loadtests.ports import free_port

REPO = Path(__file__).resolve().parents[1]


def server_log(url: str) -> Path:
    """Where the server at `url` writes its log."""
    return Path(tempfile.gettempdir()) / f"nnserve-{url.rsplit(':', 1)[1]}.log"


@contextmanager
def bentoml_serve(
    models_dir: Path, expect_ready: bool = True, deadline_s: float = 90, code: Path = REPO, **env: str
) -> Iterator[str]:
    """Starts the service on a free port; yields its base URL once /readyz answers 200 (or, when
    `expect_ready` is False, once /livez answers). Stops it on exit; its log is at server_log(url).
    `code` is the checkout it serves (another commit's worktree, for the bench's --against)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = server_log(url)
    # Each server its own BENTOML_HOME: `bentoml serve` wipes $BENTOML_HOME/prometheus_multiproc_dir at
    # start, so a second server on the same home would erase the first one's metrics.
    home = Path(tempfile.gettempdir()) / f"nnserve-bentoml-home-{port}"
    # gRPC on a port of its own (127.0.0.1), unless the caller names one: servers run side by side.
    grpc = {"NNSERVE_GRPC_PORT": str(free_port()), "NNSERVE_GRPC_HOST": "127.0.0.1"}
    environment = {**os.environ, **grpc, "NNSERVE_MODELS_DIR": str(models_dir), "BENTOML_HOME": str(home), **env}
    # `python -m bentoml`, not the script beside the interpreter: the GPU check installs with pip --target,
    # which puts no script there (loadtests/gpu_serve.py).
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "service.app:NNServe", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=code, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    probe = "/readyz" if expect_ready else "/livez"

    def ready(url: str) -> bool:
        return httpx.get(url + probe, timeout=2).status_code == 200

    try:
        wait_until_up("bentoml serve", proc, url, ready, deadline_s, log_path)
        yield url
    finally:
        stop(proc)
        shutil.rmtree(home, ignore_errors=True)


def wait_until_up(name: str, proc: subprocess.Popen, url: str, probe: Callable[[str], bool], deadline_s: float,
                  log: Path | None = None) -> None:  # fmt: skip
    """Returns once `probe(url)` passes; raises with the tail of the server's log if the process exits
    first or the deadline passes. The one start-and-wait loop of the tests, the bench and its peers."""
    end = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}{_tail(log)}")
        try:
            if probe(url):
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"{name} at {url} not up after {deadline_s} s{_tail(log)}")
        time.sleep(0.1)  # polling a starting server, with a deadline: not a synchronisation sleep


def _tail(log: Path | None) -> str:
    return f"; log {log}:\n{log.read_text(errors='replace')[-3000:]}" if log else ""


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (a test may have stopped it already); SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        proc.wait()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def metrics_containing(url: str, *needles: str, deadline_s: float = 10) -> str:
    """/metrics once it contains every needle. A worker counts a request after its answer has gone
    out, and /metrics may be served by another worker: poll, with a deadline, rather than read once."""
    end = time.monotonic() + deadline_s
    while True:
        text = httpx.get(url + "/metrics", timeout=5).text
        if all(n in text for n in needles) or time.monotonic() > end:
            return text
        time.sleep(0.05)  # polling interval, with a deadline


def requests_counted(metrics: str, needle: str) -> float:
    """bentoml_service_request_total summed over the series whose labels contain `needle`."""
    series = [x for x in metrics.splitlines() if x.startswith("bentoml_service_request_total{") and needle in x]
    return sum(float(x.rsplit(" ", 1)[1]) for x in series)


def server_processes(url: str) -> list:
    """The server process started with `--port <port of url>` (bentoml serve, uvicorn) and all its
    descendants (bentoml's workers among them)."""
    import psutil

    port = url.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "--port" in cmd[:-1] and cmd[cmd.index("--port") + 1] == port:
            return [proc, *proc.children(recursive=True)]
    raise RuntimeError(f"no server started with --port {port}")


def service_rss_mb(url: str) -> float:
    """Resident memory of the `bentoml serve` at `url`: the server process and its workers."""
    return sum(p.memory_info().rss for p in server_processes(url) if p.is_running()) / 1e6


def worker_pids(url: str) -> set[int]:
    return {p.pid for p in server_processes(url) if "_bentoml_impl.worker.service" in " ".join(p.cmdline())}


def add_version(folder: Path, source: Path, version: str, scale: float | None = None, breakage: str = "") -> Path:
    """Copies the model at `source` in as version `version` of the model folder `folder` (its card says
    that version), the way a deployment should: under a hidden name, then one rename, so the service
    never sees half a version. `scale` multiplies the graph's output (a version that answers
    differently; NaN fails the smoke check); `breakage` "sha" changes the ONNX after its card was
    written, "onnx" replaces it with bytes onnxruntime cannot load (card updated), "graph" drops a
    feature from the card, "task" says the regressor is a click model."""
    import hashlib
    import json

    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    staging = folder / f".{version}.incoming"
    staging.mkdir(parents=True)
    card = json.loads((source / "card.json").read_text())
    card["version"] = version
    onnx_path = staging / "model.onnx"
    shutil.copy(source / "model.onnx", onnx_path)
    if scale is not None:
        graph = onnx.load(str(onnx_path))
        out = graph.graph.output[0].name
        for node in graph.graph.node:
            node.output[:] = [f"{out}_unscaled" if o == out else o for o in node.output]
        graph.graph.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), f"{out}_scale"))
        graph.graph.node.append(helper.make_node("Mul", [f"{out}_unscaled", f"{out}_scale"], [out]))
        onnx.save(graph, str(onnx_path))
    if breakage == "onnx":
        onnx_path.write_bytes(b"not an onnx graph")
    card["onnx_sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    if breakage == "sha":
        onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    elif breakage == "graph":
        card["numeric"] = card["numeric"][:-1]
    elif breakage == "task":
        card["task"] = "binary_classification"
    (staging / "card.json").write_text(json.dumps(card))
    return staging.rename(folder / version)


def everywhere(url: str, check, workers: int = 2, deadline_s: float = 30) -> float:
    """Seconds until every worker's /v1/health passes `check` (each worker swaps versions in on its
    own). Asked on new connections, which the kernel spreads over the workers, until `workers`
    different workers (X-NNServe-Worker) have passed it since the last answer that failed it."""
    start = time.monotonic()
    passed: set[str] = set()
    health: dict = {}
    while time.monotonic() - start < deadline_s:
        answer = httpx.get(url + "/v1/health", headers={"Connection": "close"}, timeout=10)
        health = answer.json()
        try:
            ok = check(health)
        except (KeyError, TypeError):  # a model not (yet, or no longer) in it
            ok = False
        if ok:
            passed.add(answer.headers["x-nnserve-worker"])
            if len(passed) == workers:
                return time.monotonic() - start
        else:
            passed.clear()
        time.sleep(0.02)  # polling interval, with a deadline
    raise AssertionError(f"not every worker converged in {deadline_s} s; last health: {health}")
