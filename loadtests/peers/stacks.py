"""The peers `make bench` measures beside nnserve: what each installs, how it starts, which scenarios
it takes. Each gets its own virtual environment under build/peers/<name>/, created on first use from
its pinned packages (with onnxruntime, pydantic, numpy and pillow at .venv's versions, so the model,
the validation and the photo decoding run the same code everywhere); .venv is never touched.

A peer takes a scenario in its own natural form where it has one (KServe: v1 `instances`; MLServer: V2
columns; Triton: V2 tensors), else nnserve's own request at nnserve's route; its answer, unwrapped, must
be nnserve's (the bench checks before it measures).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from loadtests.peers.common import columns
from loadtests.serving import wait_until_up
from service.protocol.rpc.proto import grpc_service_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
VENVS = REPO / "build" / "peers"
SHARED = tuple(f"{p}=={version(p)}" for p in ("onnxruntime", "pydantic", "pydantic-settings", "numpy", "pillow"))


def as_is(answer: Any, scenario: Any) -> Any:
    return answer


@dataclass(frozen=True)
class Peer:
    name: str  # the bench row
    slug: str  # its venv's folder
    packages: tuple[str, ...]  # pinned, besides SHARED (a package named in both: the peer's pin)
    command: Callable[[Path, int, int], list[str]]  # (venv bin, port, workers) -> argv; must carry --port
    scenarios: tuple[str, ...]
    form: Callable[[Any], Any] = lambda scenario: scenario  # the bench's scenario in the peer's own form
    unwrap: Callable[[Any, Any], Any] = as_is  # (its JSON answer, scenario) -> nnserve's answer, to compare
    python: str = sys.executable  # the interpreter its venv is made with
    pausable: bool = True  # False: the bench leaves it running while others are measured (see bench.pause)


def script(name: str) -> Callable[[Path, int, int], list[str]]:
    """A peer started by its script in loadtests/peers/, with the venv's python."""
    return lambda bin, port, workers: [str(bin / "python"), f"loadtests/peers/{name}.py", "--port", str(port),
                                       "--workers", str(workers)]  # fmt: skip


def rows(scenario: Any) -> tuple[str, list[dict]]:
    """The model a tabular scenario calls, and its rows: the body is one row, or {"<field>": [rows]}."""
    body = json.loads(scenario.body)
    return scenario.route.split("/")[2], (next(iter(body.values())) if scenario.per_request > 1 else [body])


def base64_json(scenario: Any) -> Any:
    """For a peer that cannot take a multipart upload: the photo as base64 in JSON, at nnserve's own
    route for that form (POST /v1/image-tagging/predict-base64); tables as they are."""
    if not scenario.photo:
        return scenario
    body = json.dumps({"image_base64": base64.b64encode(scenario.photo).decode(), "top_k": 5}).encode()
    return replace(scenario, route="/v1/image-tagging/predict-base64", body=body, content_type="application/json")


def kserve_v1(scenario: Any) -> Any:
    """KServe's v1 protocol: POST /v1/models/<name>:predict {"instances": [rows]}; a photo as
    {"image": {"b64": ...}}, the form of KServe's image examples."""
    if scenario.photo:
        model, instances = scenario.tagger, [{"image": {"b64": base64.b64encode(scenario.photo).decode()}}]
    else:
        model, instances = rows(scenario)
    body = json.dumps({"instances": instances}).encode()
    return replace(scenario, route=f"/v1/models/{model}:predict", body=body, content_type="application/json")


def kserve_answer(answer: dict, scenario: Any) -> Any:
    """One answer per instance; a batch's gathered into nnserve's batch answer."""
    answers = answer["predictions"]
    return answers[0] if scenario.per_request == 1 else one_batch(answers)


def one_batch(answers: list[dict]) -> dict:
    served = {"model": answers[0]["model"], "version": answers[0]["version"]}
    return {**served, "predictions": [{k: v for k, v in a.items() if k not in served} for a in answers]}


def v2_columns(scenario: Any) -> Any:
    """The V2 (Open Inference Protocol) JSON form MLServer's docs use: a table as one input per column,
    decoded by its pandas codec; a photo as one BYTES input in base64 (its base64 codec).
    POST /v2/models/<name>/infer."""
    if scenario.photo:
        photo = base64.b64encode(scenario.photo).decode()
        inputs = [{"name": "photo", "shape": [1], "datatype": "BYTES", "data": [photo],
                   "parameters": {"content_type": "base64"}}]  # fmt: skip
        return v2_request(scenario, scenario.tagger, {"inputs": inputs})
    model, table = rows(scenario)
    kinds = {bool: "BOOL", int: "INT64", float: "FP64", str: "BYTES"}
    inputs = [{"name": k, "shape": [len(table)], "datatype": kinds[type(v)], "data": [r[k] for r in table],
               **({"parameters": {"content_type": "str"}} if isinstance(v, str) else {})}
              for k, v in table[0].items()]  # fmt: skip
    return v2_request(scenario, model, {"parameters": {"content_type": "pd"}, "inputs": inputs})


def v2_tensors(scenario: Any) -> Any:
    """The V2 form Triton takes: a table as one [rows, 1] tensor per column, of the column's datatype
    in the model's request type; a photo as a [1, 1] BYTES tensor sent binary (Triton's binary
    tensor extension, what its clients send). POST /v2/models/<name>/infer."""
    if scenario.grpc:
        return grpc_tensors(scenario)
    if scenario.photo:
        data = len(scenario.photo).to_bytes(4, "little") + scenario.photo  # a BYTES element: length, bytes
        header = json.dumps({"inputs": [{"name": "photo", "shape": [1, 1], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(data)}}]}).encode()  # fmt: skip
        return replace(scenario, route=f"/v2/models/{scenario.tagger}/infer", body=header + data,
                       content_type="application/octet-stream",
                       headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    model, table = rows(scenario)
    inputs = [{"name": k, "shape": [len(table), 1], "datatype": kind, "data": [r[k] for r in table]}
              for k, kind in columns(model).items()]  # fmt: skip
    return v2_request(scenario, model, {"inputs": inputs})


def kserve_v2(scenario: Any) -> Any:
    """KServe's v2 protocol: a table as Triton takes it; a photo as base64 text in a BYTES tensor, since
    KServe 0.21 reads binary BYTES tensors as UTF-8 text (InferRequest.from_bytes) and a JPEG is not."""
    return v2_columns(scenario) if scenario.photo else v2_tensors(scenario)  # (v2_tensors: gRPC's too)


def grpc_tensors(scenario: Any) -> Any:
    """A gRPC scenario's ModelInferRequest (the graph's tensors, raw) to the peer's `<name>-tensors` model
    (loadtests/peers/common.py:GraphModel): the same bytes but the model's name."""
    request = pb.ModelInferRequest.FromString(scenario.body)
    request.model_name += "-tensors"
    return replace(scenario, body=request.SerializeToString())


def v2_request(scenario: Any, model: str, body: dict) -> Any:
    return replace(scenario, route=f"/v2/models/{model}/infer", body=json.dumps(body).encode(),
                   content_type="application/json")  # fmt: skip


def v2_answer(answer: dict, scenario: Any) -> dict:
    """V2 outputs, one per field of nnserve's answer (structures as JSON text), -> nnserve's answer."""
    fields = {o["name"]: o["data"] for o in answer["outputs"]}
    served = {k: fields.pop(k)[0] for k in ("model", "version")}
    answers = [{k: json.loads(v) if k in STRUCTURED else v for k, v in zip(fields, values, strict=True)}
               for values in zip(*fields.values(), strict=True)]  # fmt: skip
    return one_batch([{**served, **a} for a in answers]) if scenario.per_request > 1 else {**served, **answers[0]}


STRUCTURED = ("warnings", "tags")  # the fields of nnserve's answers that are lists: JSON text in a V2 output


def torchserve(scenario: Any) -> Any:
    """TorchServe's inference API, POST /predictions/<name>: nnserve's JSON body, or the photo file
    itself as the body (how its image handlers take one)."""
    if scenario.photo:
        return replace(scenario, route=f"/predictions/{scenario.tagger}", body=scenario.photo,
                       content_type="image/jpeg")  # fmt: skip
    return replace(scenario, route=f"/predictions/{rows(scenario)[0]}")


ALL = ("housing-1row", "adclick-1row", "adclick-batch256", "tagger-cifar", "tagger-224-1000class")
GRPC = ("housing-1row-grpc", "adclick-batch256-grpc")  # the peers with a gRPC endpoint: Triton's and KServe's

PEERS = (
    Peer(
        # its API servers hand requests to its workers pickled: a multipart form (an open file) does not pickle
        "LitServe", "litserve", ("litserve==0.2.19", "uvloop", "pyzmq"),
        script("litserve_app"),
        ALL, base64_json,
    ),
    Peer(
        "BentoML, written from its docs", "bentoml-naive", ("bentoml==1.4.40",),
        lambda bin, port, workers: [str(bin / "bentoml"), "serve", "loadtests.peers.bentoml_naive:Naive", "--host",
                                    "127.0.0.1", "--port", str(port)],
        ALL,
    ),
    Peer(
        "Ray Serve", "ray-serve", ("ray[serve]==2.60.0", f"python-multipart=={version('python-multipart')}"),
        script("ray_app"),
        ALL,
    ),
    Peer(
        "KServe (v1 protocol)", "kserve", ("kserve==0.21.0",),
        script("kserve_app"),
        ALL, kserve_v1, kserve_answer,
    ),
    Peer(
        "KServe (v2 protocol)", "kserve", ("kserve==0.21.0",),
        script("kserve_app"),
        ALL + GRPC, kserve_v2, v2_answer,
    ),
    Peer(
        # uvloop 0.23 breaks MLServer 1.7.1's inference workers (no current event loop): its last good one
        "MLServer (V2, pandas codec)", "mlserver", ("mlserver==1.7.1", "uvloop==0.21.0"),
        script("mlserver_app"),
        ALL, v2_columns, v2_answer,
    ),
    Peer(
        # nvidia-pytriton 0.7.0 requires numpy < 2; its stub links the system's libpython3.11; nnserve's
        # tasks (common.py's models) import anyio, which the other peers' frameworks bring
        "Triton (PyTriton, V2 tensors)", "pytriton", ("nvidia-pytriton==0.7.0", "numpy==1.26.4",
                                                      f"anyio=={version('anyio')}"),
        script("pytriton_app"),
        ALL + GRPC, v2_tensors, v2_answer, python="/usr/bin/python3.11",
        # stopped and resumed, tritonserver aborts (boost::interprocess::lock_exception: its Python backend
        # talks to its stubs under timed locks); idle it uses 0.4% of a core (measured), so it stays up
        pausable=False,
    ),
    Peer(
        # its model workers import torch (the CPU wheel on disk; an unpinned one pulls gigabytes) and yaml;
        # anyio for nnserve's tasks, as PyTriton's
        "TorchServe", "torchserve",
        ("torchserve==0.12.0", "torch-model-archiver==0.12.0", "torch==2.13.0", "pyyaml==6.0.4",
         f"anyio=={version('anyio')}"),
        script("torchserve_app"),
        ALL, torchserve,
    ),
)  # fmt: skip


def venv(peer: Peer) -> Path:
    """The peer's venv's bin/, created (or re-created when its packages changed) first."""
    root = VENVS / peer.slug
    pinned = {p.split("==")[0] for p in peer.packages}
    packages = [*peer.packages, *(p for p in SHARED if p.split("==")[0] not in pinned)]
    wanted = "\n".join([peer.python, *packages]) + "\n"
    stamp = root / "requirements.txt"
    if not stamp.exists() or stamp.read_text() != wanted:
        VENVS.mkdir(parents=True, exist_ok=True)
        subprocess.run([peer.python, "-m", "venv", "--clear", str(root)], check=True)
        print(f"{peer.name}: installing {', '.join(peer.packages)} into {root}", flush=True)
        subprocess.run([str(root / "bin" / "pip"), "install", "-q", *packages], check=True)
        stamp.write_text(wanted)
    return root / "bin"


@contextmanager
def serve(peer: Peer, models_dir: Path, workers: int, port: int, probe: Callable[[str], bool],
          grpc_port: int = 0) -> Iterator[str]:  # fmt: skip
    """The peer started on `port` (and its gRPC endpoint on `grpc_port`, when given) with `workers` worker
    processes; yields its URL once `probe` passes."""
    env = {**os.environ, "NNSERVE_MODELS_DIR": str(models_dir), "BENCH_WORKERS": str(workers),
           "BENCH_THREADS": str(max(1, (os.cpu_count() or 1) // workers)),
           "BENCH_GRPC_PORT": str(grpc_port)}  # fmt: skip
    bin_dir = venv(peer)
    log_name = re.sub(r"[^a-z0-9]+", "-", peer.name.lower()).strip("-")  # two peers may share a venv
    log = open(VENVS / f"{log_name}.log", "w")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen(peer.command(bin_dir, port, workers), cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(peer.name, proc, url, probe, 180, Path(log.name))
        yield url
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the peer and everything it started, then SIGKILL to what is left after 30 s. All its
    processes are waited for, not only the first: TorchServe's Java server outlives its launcher by
    seconds, and one still running makes the next `torchserve --start` refuse ("already running")."""
    with suppress(psutil.NoSuchProcess):
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for member in family:
            with suppress(psutil.NoSuchProcess):
                member.terminate()
        _, alive = psutil.wait_procs(family, timeout=30)
        for member in alive:
            with suppress(psutil.NoSuchProcess):
                member.kill()
    proc.wait()
