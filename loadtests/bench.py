"""The benchmark: nnserve against its reference points, measured in the same run, alternating.

    python -m loadtests.bench [--duration 10] [--rounds 3] [--only housing-1row,...]    (or: make bench)

For each scenario, each round runs wrk against nnserve (`bentoml serve`, production configuration),
the plain Starlette app and the FastAPI app of loadtests/reference_apps.py (same validation, same
onnxruntime call) on equal terms with nnserve: its worker count, uvloop and httptools, its onnxruntime
threading; with --history also the one-process asyncio + h11 apps every bench before issue 17 used,
labelled as such; with --against REF also nnserve as it was at the git commit REF (a worktree of
it serving its own committed models, same settings): what a change (code or a re-exported model)
gained or lost, in the same run. One after the other;
raw onnxruntime in-process is the ceiling. The ratios are against the tuned references. Each run
also measures what the stack's server processes cost (loadtests/cost.py): CPU-seconds per 1,000
requests and peak resident memory. The table shows medians over the rounds and ratios, and is
appended to loadtests/RESULTS.md with the date, commit and machine. Load goes to 127.0.0.1 only,
for --duration seconds per run.

Besides the issue's five scenarios, adclick-batch256-oip-binary sends the same 256 impressions as
binary tensors to the Open Inference Protocol route (the bulk path, no JSON per row); the reference
apps have no such route, so it is measured against the onnxruntime ceiling only. The gRPC scenarios
(housing-1row-grpc, adclick-batch256-grpc) send the same tensors as ModelInferRequests with h2load
(loadtests/grpc_load.py), beside their HTTP binary twins (housing-1row-oip-binary, adclick-batch256-oip-binary),
and to the peers with a gRPC endpoint, Triton (PyTriton) and KServe, each serving the graph on the same
tensors as `<model>-tensors` (loadtests/peers/common.py:GraphModel); every stack's answer is checked equal
to nnserve's before the load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
from PIL import Image

from loadtests.cost import cost
from loadtests.gpu_check import per_second
from loadtests.grpc_load import INFER, answered, h2load, tabular_request
from loadtests.payloads import SHARED, cifar_jpegs, houses, impressions
from loadtests.peers.stacks import PEERS, Peer, serve
from loadtests.serving import REPO, bentoml_serve, free_port, server_processes, stop, wait_until_up
from service.protocol.rpc.proto import grpc_service_pb2 as pb
from service.runtime import load_model
from service.settings import Settings
from training.contract import AD_CLICK

RESULTS = Path(__file__).with_name("RESULTS.md")
BOUNDARY = "nnservebenchboundary"


@dataclass
class Scenario:
    name: str
    route: str
    connections: int
    body: bytes
    content_type: str
    unit: str  # what one request counts: req, rows, images
    per_request: int  # rows or images in one request
    models: str = "committed"  # or "imagenet": a models dir holding one 1000-class 224x224 classifier
    headers: dict[str, str] = field(default_factory=dict)  # besides Content-Type
    references: bool = True  # False: a route only nnserve has (OIP), measured without the reference apps
    photo: bytes = b""  # the photo a multipart body carries (a peer may take it in another form)
    tagger: str = ""  # the classifier a photo scenario calls
    ceiling: float = 0.0  # raw onnxruntime in-process, same unit per second
    graph_rows: int = 0  # an explanation: the graph rows (photos) one request runs, its ceiling's batch
    grpc: bool = False  # `body` is a ModelInferRequest, sent over gRPC by h2load (loadtests/grpc_load.py)
    results: dict[str, list[dict]] = field(default_factory=dict)


def multipart(photo: bytes, top_k: int = 5) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="photo"; filename="photo.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + (
            f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n{top_k}\r\n--{BOUNDARY}--\r\n'
        ).encode()
    )


def photo_224() -> bytes:
    image = Image.open(SHARED / "images" / "sample_photos" / "chelsea.png").convert("RGB")
    side = min(image.size)
    image = image.crop((0, 0, side, side)).resize((224, 224), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def imagenet_models_dir(root: Path) -> Path:
    """A models dir with one randomly initialised 1000-class 224x224 CNN (needs torch: bench only)."""
    import torch
    from torch import nn

    from training.export import export_onnx
    from training.make_card import Config, make_card

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(128, 256, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 1000),
    )  # fmt: skip
    onnx_path = export_onnx(net.eval(), {"input": torch.randn(2, 3, 224, 224)}, "logits", root / "raw")
    labels = SHARED / "images" / "imagenet_class_index.json"
    make_card(
        Config(onnx=onnx_path, labels=labels, name="imagenet-classifier", out=root / "models" / "imagenet-classifier")
    )
    return root / "models"


def oip_binary_batch(rows: list[dict]) -> tuple[bytes, dict[str, str]]:
    """An OIP infer request for the ad-click model with its tensors in binary (the bulk path)."""
    numeric = np.array([[r["age"]] for r in rows], "<f4")
    codes = np.array([[f.code(r[f.name]) for f in AD_CLICK.categorical] for r in rows], "<i8")
    header = json.dumps({
        "inputs": [
            {"name": "numeric", "shape": list(numeric.shape), "datatype": "FP32",
             "parameters": {"binary_data_size": numeric.nbytes}},
            {"name": "categorical", "shape": list(codes.shape), "datatype": "INT64",
             "parameters": {"binary_data_size": codes.nbytes}},
        ],
        "outputs": [{"name": "click_probability", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    return header + numeric.tobytes() + codes.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def oip_binary(message: bytes) -> tuple[bytes, dict[str, str]]:
    """The HTTP form of a gRPC ModelInferRequest: the same tensors, binary (the protocol's bulk path)."""
    request = pb.ModelInferRequest.FromString(message)
    header = json.dumps({
        "inputs": [{"name": i.name, "shape": list(i.shape), "datatype": i.datatype,
                    "parameters": {"binary_data_size": len(raw)}}
                   for i, raw in zip(request.inputs, request.raw_input_contents, strict=True)],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    return header + b"".join(request.raw_input_contents), {"Inference-Header-Content-Length": str(len(header))}


def scenarios() -> list[Scenario]:
    house = json.dumps(houses()[0]).encode()
    impression = json.dumps(impressions()[0]).encode()
    batch = json.dumps({"impressions": impressions()[:256]}).encode()
    oip_body, oip_headers = oip_binary_batch(impressions()[:256])
    grpc_house = tabular_request(REPO / "models" / "housing-price", houses()[:1])
    grpc_batch = tabular_request(REPO / "models" / "ad-click", impressions()[:256])
    oip_house, oip_house_headers = oip_binary(grpc_house)
    form = f"multipart/form-data; boundary={BOUNDARY}"
    cifar, photo = cifar_jpegs()[0][1], photo_224()
    return [
        Scenario("housing-1row", "/v1/housing-price/predict", 16, house, "application/json", "req", 1),
        Scenario("adclick-1row", "/v1/ad-click/predict", 64, impression, "application/json", "req", 1),
        Scenario("adclick-batch256", "/v1/ad-click/predict-batch", 16, batch, "application/json", "rows", 256),
        Scenario("adclick-batch256-oip-binary", "/v2/models/ad-click/infer", 16, oip_body, "application/octet-stream",
                 "rows", 256, headers=oip_headers, references=False),
        # The Open Inference Protocol over gRPC (docs/grpc.md) beside its HTTP binary form: the same tensors.
        Scenario("housing-1row-oip-binary", "/v2/models/housing-price/infer", 16, oip_house, "application/octet-stream",
                 "req", 1, headers=oip_house_headers, references=False),
        Scenario("housing-1row-grpc", INFER, 16, grpc_house, "application/grpc", "req", 1, references=False, grpc=True),
        Scenario("adclick-batch256-grpc", INFER, 16, grpc_batch, "application/grpc", "rows", 256, references=False,
                 grpc=True),
        Scenario("tagger-cifar", "/v1/image-tagging/predict", 16, multipart(cifar), form, "images", 1, photo=cifar,
                 tagger="image-tagging"),
        Scenario("tagger-224-1000class", "/v1/image-tagging/predict", 16, multipart(photo), form, "images", 1,
                 models="imagenet", photo=photo, tagger="imagenet-classifier"),
        # Explanations (docs/explain.md): only nnserve answers them; the ceiling runs the same graph rows in
        # one onnxruntime call. Beside the predictions above, their CPU-s per 1,000 is their cost.
        Scenario("housing-explain", "/v1/housing-price/explain", 4, house, "application/json", "req", 1,
                 references=False, graph_rows=64 * 15 * 16),
        Scenario("adclick-explain", "/v1/ad-click/explain", 4, impression, "application/json", "req", 1,
                 references=False, graph_rows=(1 << 10) * 16),
        Scenario("tagger-cifar-explain", "/v1/image-tagging/explain", 4, multipart(cifar), form, "req", 1,
                 references=False, photo=cifar, graph_rows=8 * 8 + 1),
    ]  # fmt: skip


# --- the ceiling: raw onnxruntime in-process --------------------------------------------------------
def ceiling(scenario: Scenario, models_dir: Path) -> float:
    """Rows or images per second onnxruntime does in this process: batch 1 for single-row scenarios,
    256 for the batch one, the best of 1/8/32/64 for images (decoding not counted); for an explanation,
    its graph rows (photos) in one call, counted as one request."""
    if scenario.graph_rows:
        photos = "image-tagging" in scenario.route
        model = load_model(models_dir / ("image-tagging" if photos else "housing-price" if "housing" in
                                         scenario.route else "ad-click"))  # fmt: skip
        inputs = [np.zeros([scenario.graph_rows, *[d for d in t.shape[1:]]], dtype=t.dtype) for t in model.card.inputs]
        return per_second(lambda: model.run(*inputs), 1, 2.0)
    if scenario.unit == "images":
        model = next(load_model(p) for p in models_dir.iterdir() if (p / "card.json").exists()
                     and json.loads((p / "card.json").read_text())["task"] == "image_classification")  # fmt: skip
        shape = [d if d != "N" else 1 for d in model.card.inputs[0].shape]
        best = 0.0
        for n in (1, 8, 32, 64):
            x = np.zeros([n, *shape[1:]], dtype=model.card.inputs[0].dtype)
            best = max(best, per_second(lambda x=x: model.run(x), n, 2.0))
        return best
    housing = "housing" in scenario.route or scenario.name.startswith("housing")
    model = load_model(models_dir / ("housing-price" if housing else "ad-click"))
    n = scenario.per_request
    inputs = [np.zeros([n, t.shape[1]], dtype=t.dtype) for t in model.card.inputs]
    return per_second(lambda: model.run(*inputs), n, 2.0)


# --- the HTTP stacks -------------------------------------------------------------------------------
def nnserve_workers() -> int:
    """The worker count `bentoml serve` runs with here: NNSERVE_WORKERS, else one per core."""
    return Settings().workers or os.cpu_count() or 1


@contextmanager
def uvicorn_app(app: str, models_dir: Path, tagger: str, tuned: bool = True):
    """A reference app: tuned as nnserve runs (its workers, uvloop, httptools, its onnxruntime threads),
    or, for the history row, one process on asyncio and h11."""
    port = free_port()
    env = {**os.environ, "NNSERVE_MODELS_DIR": str(models_dir), "BENCH_TAGGER": tagger, "BENCH_TUNED": str(int(tuned))}
    server = (["--workers", str(nnserve_workers()), "--loop", "uvloop", "--http", "httptools"] if tuned
              else ["--loop", "asyncio", "--http", "h11"])  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"loadtests.reference_apps:{app}", "--port", str(port), "--host", "127.0.0.1",
         *server, "--log-level", "warning", "--no-access-log"],
        cwd=REPO, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(app, proc, url, lambda u: httpx.get(u + "/", timeout=1) is not None, 60)
        yield url
    finally:
        stop(proc)


def wrk(url: str, scenario: Scenario, seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(scenario.body)
        script = Path(tmp) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f'wrk.headers["Content-Type"] = "{scenario.content_type}"\n'
            + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in scenario.headers.items())
            + f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
        )
        out = subprocess.run(
            ["wrk", "-t2", f"-c{scenario.connections}", f"-d{seconds}s", "--latency", "-s", str(script),
             url + scenario.route],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
    return parse_wrk(out, scenario.per_request)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_wrk(out: str, per_request: int) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "throughput": rps * per_request,
        "requests": requests,
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


STACKS = ("nnserve", "starlette", "fastapi")
CHART = REPO / "loadtests" / "bench.png"  # the latest recorded run's chart, shown in the README
HISTORY = " (history: 1 process, asyncio + h11)"


DRIFT_OFF = "nnserve, drift off"  # the same service with NNSERVE_DRIFT_WINDOW_ROWS=0: what drift tracking costs
FLOOR = "floor: bare ASGI + onnxruntime"  # the least one request can cost (issue 39): every row reads against it
PAYLOAD_LOG = "nnserve, payload log on"  # every prediction logged (service/dataplane/payloads.py): what logging costs


def pause(url: str, stopped: bool) -> None:
    """Stops (SIGSTOP) or resumes a stack's processes. Only the stack being measured runs: some use CPU
    while idle (LitServe's workers poll their queue: 35% of a core; Ray's 14 processes: 10%), which
    weighed on every other stack's figures when all stayed up (nnserve's housing throughput fell by a
    third)."""
    for proc in server_processes(url):
        with suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGSTOP if stopped else signal.SIGCONT)


def post(url: str, scenario: Scenario) -> httpx.Response:
    headers = {"content-type": scenario.content_type, **scenario.headers}
    return httpx.post(url + scenario.route, content=scenario.body, headers=headers, timeout=30)


def calls(target: str, body: bytes) -> bool:
    """Whether a gRPC endpoint answers the call OK (a peer's, while it starts)."""
    try:
        answered(target, body)
    except grpc.RpcError:
        return False
    return True


def _grpc_outputs(answer: pb.ModelInferResponse) -> np.ndarray:
    """A ModelInferResponse's first output as float32 values (raw or typed)."""
    if answer.raw_output_contents:
        return np.frombuffer(answer.raw_output_contents[0], "<f4")
    return np.array(answer.outputs[0].contents.fp32_contents, np.float32)


def same_answer(peer: object, ours: object) -> bool:
    """A peer's JSON answer is nnserve's: the same fields, numbers equal to float32 precision."""
    if isinstance(ours, dict):
        keys = isinstance(peer, dict) and peer.keys() == ours.keys()
        return keys and all(same_answer(peer[k], ours[k]) for k in ours)
    if isinstance(ours, list):
        return isinstance(peer, list) and len(peer) == len(ours) and all(map(same_answer, peer, ours))
    if isinstance(ours, float):
        return isinstance(peer, int | float) and abs(peer - ours) <= 1e-6 * max(1.0, abs(ours))
    return peer == ours


@contextmanager
def worktree(ref: str) -> Iterator[tuple[str, Path]]:
    """A detached worktree of `ref` in a temporary directory, removed on exit; yields (short commit, path)."""
    commit = git("rev-parse", "--short", ref)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / commit
        git("worktree", "add", "--detach", "--quiet", str(path), commit)
        try:
            yield commit, path
        finally:
            git("worktree", "remove", "--force", str(path))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def run_scenario(
    scenario: Scenario, models_dir: Path, seconds: int, rounds: int, history: bool = False, drift_off: bool = False,
    payload_log: bool = False, peers: tuple[Peer, ...] = (), against: tuple[str, Path] | None = None,
) -> None:  # fmt: skip
    tagger = scenario.tagger or "image-tagging"
    with ExitStack() as stack:
        grpc_targets: dict[str, str] = {}  # each nnserve's gRPC host:port

        def nnserve(name: str, served: Path = models_dir, **options: Any) -> str:
            port = free_port()
            grpc_targets[name] = f"127.0.0.1:{port}"
            return stack.enter_context(bentoml_serve(served, NNSERVE_GRPC_PORT=str(port), **options))

        urls = {"nnserve": nnserve("nnserve")}
        if against is not None and not scenario.grpc:  # (a commit before gRPC would not answer it)
            # the commit's own committed models too: a change may be a re-exported model (the references serve ours)
            served = against[1] / "models" if models_dir == REPO / "models" else models_dir
            urls[f"nnserve at {against[0]}"] = nnserve(f"nnserve at {against[0]}", served, code=against[1])
        if drift_off:
            urls[DRIFT_OFF] = nnserve(DRIFT_OFF, NNSERVE_DRIFT_WINDOW_ROWS="0")
        if payload_log:
            logs = stack.enter_context(tempfile.TemporaryDirectory())
            urls[PAYLOAD_LOG] = nnserve(PAYLOAD_LOG, NNSERVE_PAYLOAD_LOG_DIR=logs)
        if scenario.references:
            urls["starlette"] = stack.enter_context(uvicorn_app("starlette_app", models_dir, tagger))
            urls["fastapi"] = stack.enter_context(uvicorn_app("fastapi_app", models_dir, tagger))
        if not scenario.grpc:  # the floor: HTTP and the graph's run, nothing else (reference_apps.floor_app)
            urls[FLOOR] = stack.enter_context(uvicorn_app("floor_app", models_dir, tagger))
        if scenario.references and history:
            for app in ("starlette", "fastapi"):
                urls[app + HISTORY] = stack.enter_context(uvicorn_app(f"{app}_app", models_dir, tagger, tuned=False))
        forms = {name: scenario for name in urls}  # what each stack is sent: a peer may take its own form
        if FLOOR in urls:  # the floor does not read the body: the rows it runs come in a header
            rows = str(scenario.graph_rows or scenario.per_request)
            forms[FLOOR] = replace(scenario, headers={**scenario.headers, "X-Floor-Rows": rows})
        for peer in (p for p in peers if scenario.name in p.scenarios):
            forms[peer.name] = form = peer.form(scenario)
            if scenario.grpc:  # its gRPC endpoint, up once it answers the scenario's call
                port = free_port()
                grpc_targets[peer.name] = target = f"127.0.0.1:{port}"
                up = lambda url, t=target, f=form: calls(t, f.body)  # noqa: E731
                urls[peer.name] = stack.enter_context(serve(peer, models_dir, nnserve_workers(), free_port(), up, port))
                continue
            urls[peer.name] = stack.enter_context(
                serve(peer, models_dir, nnserve_workers(), free_port(), lambda url, f=form: post(url, f).is_success)
            )
        ours = None

        def load(name: str, seconds: int) -> dict:
            if scenario.grpc:
                body = forms[name].body
                return h2load(grpc_targets[name], body, scenario.connections, seconds, scenario.per_request)
            return wrk(urls[name], forms[name], seconds)

        for name, url in urls.items():  # a warm-up, and a check that every stack answers this request
            if scenario.grpc:
                answer = answered(grpc_targets[name], forms[name].body)  # raises unless the call is answered OK
                got = _grpc_outputs(answer)
                ours = got if ours is None else ours
                if not np.allclose(got, ours, rtol=1e-6, atol=1e-7):
                    raise AssertionError(f"{name} answers {got[:4]}, nnserve {ours[:4]}: not the same work")
                load(name, 2)
                continue
            answer = post(url, forms[name])
            answer.raise_for_status()
            if name != FLOOR and answer.headers.get("content-type", "").startswith("application/json"):
                ours = answer.json() if ours is None else ours
                peer = next((p for p in peers if p.name == name), None)
                if peer is not None and not same_answer(peer.unwrap(answer.json(), scenario), ours):
                    raise AssertionError(f"{name} answers {answer.json()}, nnserve {ours}: not the same work")
            load(name, 2)
        names = list(urls)
        resident = {p.name for p in peers if not p.pausable}
        paused = {name: url for name, url in urls.items() if name not in resident}
        stack.callback(lambda: [pause(url, False) for url in paused.values()])  # stopped processes cannot exit
        for url in paused.values():
            pause(url, True)
        for r in range(rounds):  # each round starts one stack later: no stack always runs first (it showed)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if name in paused:
                    pause(urls[name], False)
                time.sleep(1)  # a just-woken stack's timers and queues settle before it is measured
                with cost(urls[name]) as spent:
                    run = load(name, seconds)
                if name in paused:
                    pause(urls[name], True)
                run["cpu_s_per_1000"] = spent["cpu_s"] / max(run["requests"], 1) * 1000
                run["peak_rss_mb"] = spent["peak_rss_mb"]
                scenario.results.setdefault(name, []).append(run)
    scenario.ceiling = ceiling(scenario, models_dir)


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(done: list[Scenario]) -> list[str]:
    lines = [
        "| scenario | stack | throughput (median) | p50 ms | p99 ms | non-2xx "
        "| vs Starlette | vs FastAPI | vs floor | vs onnxruntime | CPU s per 1,000 requests | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in done:
        plain = median(s.results["starlette"], "throughput") if s.references else 0.0
        fast = median(s.results["fastapi"], "throughput") if s.references else 0.0
        floor = median(s.results[FLOOR], "throughput") if FLOOR in s.results else 0.0
        for name, runs in s.results.items():
            t = median(runs, "throughput")
            vs = f"{t / plain:.2f} | {t / fast:.2f}" if s.references else "(no reference app) | "
            vs += f" | {t / floor:.2f}" if floor else " | "
            lines.append(
                f"| {s.name} | {name} | {t:,.0f} {s.unit}/s | {median(runs, 'p50'):.2f} | {median(runs, 'p99'):.2f} "
                f"| {sum(r['non_2xx'] for r in runs)} | {vs} | {t / s.ceiling:.3f} "
                f"| {median(runs, 'cpu_s_per_1000'):.3f} | {max(r['peak_rss_mb'] for r in runs):.0f} |"
            )
        lines.append(
            f"| {s.name} | onnxruntime in-process (ceiling) | {s.ceiling:,.0f} {s.unit}/s | | | | | | | 1 | | |"
        )
    return lines


def targets(done: list[Scenario]) -> list[str]:
    """The performance issue's targets, each with its measured figure."""
    out = []
    for s in done:
        ours = s.results["nnserve"]
        t, p99 = median(ours, "throughput"), median(ours, "p99")
        if s.graph_rows:  # an explanation: what it costs, beside its prediction's
            out.append(f"(explanation) {s.name}: {t / s.ceiling:.3f}x onnxruntime running its {s.graph_rows:,} "
                       f"graph rows in one call; {median(ours, 'cpu_s_per_1000'):.1f} CPU-s per 1,000")  # fmt: skip
            continue
        if s.grpc:  # issue 37's bar: gRPC binary at least as fast as the same tensors over HTTP binary
            twin = next((d for d in done if d.name == s.name.replace("-grpc", "-oip-binary")), None)
            for peer in (p for p in PEERS if p.name in s.results):  # ... and ahead of every peer's gRPC
                theirs = median(s.results[peer.name], "throughput")
                out.append(f"{'MET ' if t > theirs else 'MISS'} {s.name}: {t / theirs:.2f}x {peer.name}'s gRPC > 1.0")
            if twin is not None:
                http = median(twin.results["nnserve"], "throughput")
                out.append(f"{'MET ' if t >= http else 'MISS'} {s.name}: {t / http:.2f}x HTTP binary ({twin.name}) "
                           f">= 1.0; {t / s.ceiling:.3f}x onnxruntime")  # fmt: skip
                continue
        if not s.references:  # not one of the scenarios: the same target as the batch one, for comparison
            out.append(f"(bulk path) {s.name}: {t / s.ceiling:.3f}x onnxruntime (scenario 3's bar: 0.5)")
            continue
        plain, fast = median(s.results["starlette"], "throughput"), median(s.results["fastapi"], "throughput")
        if s.name in ("housing-1row", "adclick-1row"):  # issue 17's bars, against the tuned references
            non_2xx = sum(r["non_2xx"] for r in ours)
            checks = [(t >= fast, f"{t / fast:.2f}x tuned FastAPI >= 1.0"),
                      (t >= 0.6 * plain, f"{t / plain:.2f}x tuned Starlette >= 0.6"),
                      (non_2xx == 0, f"{non_2xx} non-2xx (503s) == 0")]  # fmt: skip
            if s.connections == 16:
                checks.append((p99 <= 10, f"p99 {p99:.1f} ms <= 10 at 16 connections"))
            # issue 39's bars: half-way from where nnserve was to the floor
            cpu = median(ours, "cpu_s_per_1000")
            checks += [(cpu <= 0.130, f"{cpu * 1000:.0f} us of CPU per request <= 130"),
                       (t >= plain, f"{t / plain:.2f}x tuned Starlette >= 1.0 (issue 39)")]  # fmt: skip
            if s.connections == 16:
                checks += [(t >= 10_000, f"{t:,.0f} req/s >= 10,000 at 16 connections"),
                           (p99 <= 5, f"p99 {p99:.1f} ms <= 5 at 16 connections (issue 39)")]  # fmt: skip
        elif s.unit == "rows":
            checks = [(t >= 0.25 * s.ceiling, f"{t / s.ceiling:.3f}x onnxruntime >= 0.25")]
        else:
            checks = [(t >= 0.5 * s.ceiling, f"{t / s.ceiling:.3f}x onnxruntime >= 0.5")]
            if s.name == "tagger-cifar":  # issue 39's bar for photos
                checks.append((t >= 0.6 * s.ceiling, f"{t / s.ceiling:.3f}x onnxruntime >= 0.6 (issue 39)"))
        for peer in (p.name for p in PEERS if p.name in s.results):  # "at least every peer"
            theirs = median(s.results[peer], "throughput")
            checks.append((t >= theirs, f"{t / theirs:.2f}x {peer} >= 1.0"))
        out += [f"{'MET ' if ok else 'MISS'} {s.name}: {text}" for ok, text in checks]
        if FLOOR in s.results:
            floor, floor_us = median(s.results[FLOOR], "throughput"), median(s.results[FLOOR], "cpu_s_per_1000") * 1000
            ours_us = median(ours, "cpu_s_per_1000") * 1000
            out.append(f"(floor) {s.name}: {floor:,.0f} {s.unit}/s at {floor_us:.0f} us of CPU per request; "
                       f"nnserve at {t / floor:.2f}x of it, {ours_us:.0f} us")  # fmt: skip
    return out


def chart(done: list[Scenario], path: Path, title: str) -> None:
    """Throughput (bars) and p99 (beside each bar) per stack, one panel per scenario, fastest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [len(s.results) + 1 for s in done]
    fig, axes = plt.subplots(
        len(done), 1, figsize=(10, 1.0 + 0.42 * sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, s in zip(axes[:, 0], done, strict=True):
        rows = sorted(s.results.items(), key=lambda item: median(item[1], "throughput"))
        names = [name for name, _ in rows] + ["onnxruntime in-process (ceiling)"]
        values = [median(runs, "throughput") for _, runs in rows] + [s.ceiling]
        colours = ["#3274d9" if n == "nnserve" else "#8e8e8e" if n.startswith(("onnxruntime", "floor")) else "#b8c4d6"
                   for n in names]  # fmt: skip
        ax.barh(names, values, color=colours)
        ax.set_xscale("log")
        for y, (_, runs) in enumerate(rows):
            ax.text(values[y] * 1.05, y, f"{values[y]:,.0f}  p99 {median(runs, 'p99'):.1f} ms", va="center", fontsize=8)
        ax.text(values[-1] * 1.05, len(rows), f"{values[-1]:,.0f}", va="center", fontsize=8)
        ax.set_title(f"{s.name} ({s.unit}/s, log scale; {s.connections} connections)", loc="left", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.set_xlim(right=max(values) * 8)
    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per stack, alternating (default 3)")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--no-record", action="store_true", help="do not append to loadtests/RESULTS.md")
    parser.add_argument("--history", action="store_true", help="also the one-process asyncio + h11 references")
    parser.add_argument("--drift-off", action="store_true", help="also nnserve without drift tracking (its cost)")
    parser.add_argument("--payload-log", action="store_true", help="also nnserve logging every prediction (its cost)")
    parser.add_argument("--against", metavar="REF", help="also nnserve as at this git commit (what a change did)")
    parser.add_argument(
        "--chart", type=Path, default=None, help="the chart's PNG (default: loadtests/bench.png when recording)"
    )
    parser.add_argument("--peers", default="all", help="peers to measure, by venv name, comma-separated; all; none")
    args = parser.parse_args(argv)
    chosen = [s for s in scenarios() if not args.only or s.name in args.only.split(",")]
    peers = tuple(p for p in PEERS if args.peers == "all" or p.slug in args.peers.split(","))
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        against = stack.enter_context(worktree(args.against)) if args.against else None
        dirs = {"committed": REPO / "models"}
        if any(s.models == "imagenet" for s in chosen):
            dirs["imagenet"] = imagenet_models_dir(Path(tmp))
        for s in chosen:
            stacks = ((len(STACKS) + 2 * args.history) if s.references else 1) + args.drift_off + args.payload_log
            stacks += against is not None and not s.grpc  # (a gRPC scenario runs no older commit)
            stacks += not s.grpc  # the floor
            stacks += sum(s.name in p.scenarios for p in peers)
            print(f"{s.name}: {args.rounds} rounds x {stacks} stacks x {args.duration} s, {s.connections} connections")
            run_scenario(
                s, dirs[s.models], args.duration, args.rounds, args.history, args.drift_off, args.payload_log, peers,
                against,
            )  # fmt: skip
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    header = f"## {time.strftime('%Y-%m-%d %H:%M')} UTC, commit {commit or '?'}, {machine()}"
    terms = f"median of {args.rounds} alternating rounds; references: {nnserve_workers()} workers, uvloop, httptools"
    report = [header, "", f"wrk -t2, {args.duration} s per run, {terms}, nnserve's onnxruntime threads.", "",
              *table(chosen), "", *[f"- {t}" for t in targets(chosen)], ""]  # fmt: skip
    print("\n".join(report))
    if not args.no_record:
        with open(RESULTS, "a") as f:
            f.write("\n".join(report) + "\n")
    path = args.chart or (None if args.no_record else CHART)
    if path is not None:
        chart(chosen, path, header.removeprefix("## "))
        print(f"chart: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
