"""The GPU check's served half: a real `bentoml serve` on onnxruntime's CUDA provider, over real HTTP.

    python -m loadtests.gpu_serve --imagenet DIR --photos DIR --out DIR [--servers cuda,cuda-thread,cpu]

Each server in SERVERS (2 workers, as the Kubernetes gpu overlay runs) over the committed models plus the
1000-class 224x224 classifier (make gpu-prepare), one after another, then:

1. what the server says bound: /readyz (200 and its body), the `provider` of each model in /v1/models,
   and the nnserve_model_info series of /metrics;
2. its answers: every sample photo through POST /v1/image-tagging/predict for both classifiers, and one
   house; the `cuda` server's answers against the `cpu` server's (same top label, the scores within
   --tolerance), which is the agreement a client sees;
3. load: --clients concurrent clients (in --processes processes, keep-alive) for --seconds on each image
   model with photos at its input size, and on one-row housing; answers by status, requests/s, the
   client-side p50/p99, and the dynamic batcher's mean batch from the server's own histogram.

It writes gpu_serve.json and gpu_serve.md into --out, and exits 1 when a server does not come up ready
on the provider asked for, a request fails, or the providers disagree. The client is Python (httpx, one
event loop per process): where it, not the server, is the limit, the requests/s are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from loadtests.gpu_check import device_name, model_sized_jpegs
from loadtests.run import scrape
from loadtests.serving import REPO, bentoml_serve
from service.runtime import Execution, load_model

CLASSIFIERS = ("image-tagging", "imagenet-classifier")
PREDICT = "/v1/image-tagging/predict"
BOUND_NAME = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}  # as onnxruntime names them
# The servers, by name: the GPU's default, the batcher in a thread beside it (the default before
# 2026-12-04; service/tasks/image/adapter.py, photo_batcher, says why it changed), and the CPU.
SERVERS = {
    "cuda": {"NNSERVE_PROVIDERS": "cuda"},
    "cuda-thread": {"NNSERVE_PROVIDERS": "cuda", "NNSERVE_DYNAMIC_BATCH_MAX": "32"},
    "cpu": {"NNSERVE_PROVIDERS": "cpu"},
}
HOUSE = {"sqft_living": 1800, "bedrooms": 3, "zipcode": 98103}  # the README's house


def models_dir(imagenet: Path, into: Path) -> Path:
    """The committed models beside the 1000-class classifier, in one folder the servers read."""
    shutil.copytree(REPO / "models", into)
    shutil.copytree(imagenet, into / imagenet.name)
    return into


def photo_form(photo: bytes, model: str) -> tuple[dict, dict]:
    return {"photo": ("photo.jpg", photo, "image/jpeg")}, {"model": model, "top_k": "5"}


def bound(url: str) -> dict:
    """What the server says it runs on: /readyz, /v1/models' providers, nnserve_model_info."""
    readyz = httpx.get(url + "/readyz", timeout=10)
    models = httpx.get(url + "/v1/models", timeout=10).json()
    info = [
        dict(labels) for (name, labels), value in scrape(url).items() if name == "nnserve_model_info" and value == 1
    ]
    return {
        "readyz_status": readyz.status_code,
        "readyz": readyz.json(),
        "providers": {m["name"]: m.get("provider") for m in models["models"]},
        "model_info": info,
    }


def answers(url: str, photos: dict[str, list[bytes]]) -> dict:
    """Each classifier's top-5 for every photo, and one house's price."""
    out: dict = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for model, files in photos.items():
            out[model] = []
            for photo in files:
                files_, data = photo_form(photo, model)
                r = client.post(PREDICT, files=files_, data=data)
                r.raise_for_status()
                out[model].append(r.json()["tags"])
        r = client.post("/v1/housing-price/predict", json=HOUSE)
        r.raise_for_status()
        out["housing-price"] = r.json()["price"]
    return out


def agreement(cuda: dict, cpu: dict, tolerance: float) -> dict:
    """Same top label for every photo, and the largest difference of a label's score within the top 5."""
    top1, worst = True, 0.0
    for model in CLASSIFIERS:
        for a, b in zip(cuda[model], cpu[model], strict=True):
            top1 &= a[0]["label"] == b[0]["label"]
            theirs = {t["label"]: t["score"] for t in b}
            worst = max([worst, *(abs(t["score"] - theirs[t["label"]]) for t in a if t["label"] in theirs)])
    price = abs(cuda["housing-price"] - cpu["housing-price"]) / abs(cpu["housing-price"])
    return {"top1_same": top1, "max_score_diff": worst, "housing_relative_diff": price,
            "ok": top1 and worst <= tolerance and price <= tolerance}  # fmt: skip


# --- load: clients in several processes, each an event loop of keep-alive connections -----------------
def _client_process(url: str, model: str, photos: list[bytes], clients: int, seconds: float, queue) -> None:
    async def one(client: httpx.AsyncClient, i: int, end: float, latencies: list, statuses: dict) -> None:
        n = 0
        while time.perf_counter() < end:
            start = time.perf_counter()
            if model == "housing-price":
                r = await client.post("/v1/housing-price/predict", json=HOUSE)
            else:
                files, data = photo_form(photos[(i + n) % len(photos)], model)
                r = await client.post(PREDICT, files=files, data=data)
            latencies.append(time.perf_counter() - start)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            n += 1

    async def run() -> tuple[list, dict]:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            end = time.perf_counter() + seconds
            await asyncio.gather(*(one(client, i, end, latencies, statuses) for i in range(clients)))
        return latencies, statuses

    queue.put(asyncio.run(run()))


def batch_sizes(url: str, model: str) -> tuple[float, float]:
    """(sum, count) of the server's nnserve_dynamic_batch_size histogram for `model`."""
    samples = scrape(url)

    def total(name: str) -> float:
        return sum(v for (n, labels), v in samples.items() if n == name and ("model", model) in labels)

    return total("nnserve_dynamic_batch_size_sum"), total("nnserve_dynamic_batch_size_count")


def gpu_sample() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""


def load(url: str, model: str, photos: list[bytes], clients: int, processes: int, seconds: float) -> dict:
    before = batch_sizes(url, model)
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    workers = [
        spawn.Process(target=_client_process, args=(url, model, photos, share, seconds, queue)) for share in shares
    ]
    mid: list[str] = []
    timer = threading.Timer(seconds / 2 + 2, lambda: mid.append(gpu_sample()))  # +2: the processes' start
    start = time.perf_counter()
    for w in workers:
        w.start()
    timer.start()
    results = [queue.get(timeout=seconds + 120) for _ in workers]
    took = time.perf_counter() - start
    for w in workers:
        w.join()
    timer.join()
    latencies = np.array([x for lat, _ in results for x in lat])
    statuses: dict[str, int] = {}
    for _, s in results:
        for code, n in s.items():
            statuses[str(code)] = statuses.get(str(code), 0) + n
    after = batch_sizes(url, model)
    runs = after[1] - before[1]
    return {
        "clients": clients, "seconds": seconds, "requests": int(latencies.size), "statuses": statuses,
        # requests over the clients' own window (took includes starting the processes: a lower bound)
        "per_s": latencies.size / max(seconds, 1e-9), "per_s_with_start": latencies.size / took,
        "p50_ms": float(np.percentile(latencies, 50) * 1000), "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "mean_batch": (after[0] - before[0]) / runs if runs else 0.0, "gpu_mid_load": mid[0] if mid else "",
    }  # fmt: skip


def serve_and_measure(server: str, models: Path, photos: dict[str, list[bytes]], args) -> dict:
    env = {**SERVERS[server], "NNSERVE_WORKERS": str(args.workers)}
    with bentoml_serve(models, deadline_s=args.start_deadline, **env) as url:
        entry: dict = {"bound": bound(url), "answers": answers(url, photos), "load": {}}
        for model in (*CLASSIFIERS, "housing-price"):
            entry["load"][model] = load(url, model, photos.get(model, []), args.clients, args.processes, args.seconds)
        return entry


def problems(result: dict) -> list[str]:
    out = []
    for server, entry in result["servers"].items():
        if entry["bound"]["readyz_status"] != 200:
            out.append(f"{server}: /readyz answered {entry['bound']['readyz_status']}")
        asked = BOUND_NAME[SERVERS[server]["NNSERVE_PROVIDERS"]]
        wrong = {m: p for m, p in entry["bound"]["providers"].items() if p != asked}
        if wrong:
            out.append(f"{server}: models on another provider: {wrong}")
        for model, run in entry["load"].items():
            failed = {code: n for code, n in run["statuses"].items() if code != "200"}
            if failed:
                out.append(f"{server}, {model}: answers not 200: {failed}")
    if "agreement" in result and not result["agreement"]["ok"]:
        out.append(f"CUDA and CPU answers disagree: {result['agreement']}")
    return out


def table(result: dict) -> list[str]:
    lines = [
        f"## Served on the GPU {result['date']}: {result['device']}",
        "",
        f"`bentoml serve`, {result['workers']} workers, real HTTP from {result['clients']} keep-alive clients "
        f"in {result['processes']} processes (httpx), {result['seconds']:.0f} s per model; Python {result['python']}.",
        "",
        "| server | model | req/s | p50 ms | p99 ms | mean batch | statuses | GPU util, memory (mid-load) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for server, entry in result["servers"].items():
        for model, r in entry["load"].items():
            batch = f"{r['mean_batch']:.1f}" if r["mean_batch"] else "none"  # no batcher: a photo a run
            lines.append(
                f"| {server} | {model} | {r['per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{batch} | {r['statuses']} | {r['gpu_mid_load']} |"
            )
    lines.append("")
    lines.extend(f"- {name}: {' '.join(f'{k}={v}' for k, v in env.items())}" for name, env in SERVERS.items()
                 if name in result["servers"])  # fmt: skip
    for server, entry in result["servers"].items():
        b = entry["bound"]
        info = [(i.get("model"), i.get("provider"), i.get("device")) for i in b["model_info"]]
        lines.append(f"- {server} server: /readyz {b['readyz_status']}; /v1/models providers {b['providers']}; "
                     f"nnserve_model_info {info}")  # fmt: skip
    if "agreement" in result:
        a = result["agreement"]
        top1 = "same" if a["top1_same"] else "DIFFERS"
        lines.append(f"- CUDA against CPU answers: top-1 {top1}, largest top-5 score difference "
                     f"{a['max_score_diff']:.1e}, housing price {a['housing_relative_diff']:.1e} relative")  # fmt: skip
    lines.extend(f"- PROBLEM: {p}" for p in result["problems"])
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imagenet", type=Path, required=True, help="a 1000-class 224x224 model folder")
    parser.add_argument("--photos", type=Path, required=True, help="real photos")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"which of {list(SERVERS)}, in order")
    parser.add_argument("--workers", type=int, default=2, help="NNSERVE_WORKERS (default 2, the gpu overlay's)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--processes", type=int, default=8, help="client processes the clients are shared over")
    parser.add_argument("--seconds", type=float, default=15.0, help="load per model (default 15)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest score difference, CUDA vs CPU")
    parser.add_argument("--start-deadline", type=float, default=240.0)
    args = parser.parse_args(argv)
    unknown = [s for s in args.servers.split(",") if s not in SERVERS]
    if unknown:  # before any server starts: a name mistyped last would otherwise cost the runs before it
        parser.error(f"--servers: {unknown} not in {list(SERVERS)}")
    with tempfile.TemporaryDirectory() as tmp:
        models = models_dir(args.imagenet, Path(tmp) / "models")
        photos = {m: model_sized_jpegs(load_model(models / m, Execution("cpu")), args.photos) for m in CLASSIFIERS}
        result: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device_name(),
            "python": sys.version.split()[0], "workers": args.workers, "clients": args.clients,
            "processes": args.processes, "seconds": args.seconds, "servers": {},
        }  # fmt: skip
        for server in args.servers.split(","):
            result["servers"][server] = serve_and_measure(server, models, photos, args)
    servers = result["servers"]
    if "cuda" in servers and "cpu" in servers:
        result["agreement"] = agreement(servers["cuda"]["answers"], servers["cpu"]["answers"], args.tolerance)
    result["problems"] = problems(result)
    lines = table(result)
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_serve.json").write_text(json.dumps(result, indent=2))
    (args.out / "gpu_serve.md").write_text("\n".join(lines) + "\n")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
