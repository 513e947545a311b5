"""gRPC load, for the bench and the Swarm rehearsal: ModelInfer requests with the graph's tensors as raw bytes
(the bulk form tritonclient sends), sent by h2load (nghttp2's HTTP/2 load generator, in C as wrk is, so
that gRPC and HTTP are measured with clients of the same weight), and a check that a request is answered.

h2load sees HTTP statuses only (a gRPC error is HTTP 200 with a grpc-status trailer): `answered` checks the
request's answer with a real gRPC client before any load is sent, and the load itself is 16 connections
against a worker admission of 96, where nothing is refused.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
from pathlib import Path

import grpc
import numpy as np

from service.protocol.rpc.proto import grpc_service_pb2 as pb
from service.protocol.rpc.proto import grpc_service_pb2_grpc as pb_grpc
from service.runtime import load_model
from service.tasks.tabular.encoder import TabularEncoder
from service.tasks.tabular.types import tabular_types

INFER = "/inference.GRPCInferenceService/ModelInfer"


def tabular_request(model_dir: Path, rows: list[dict]) -> bytes:
    """A serialized ModelInferRequest of `rows` for the model in `model_dir`, encoded as nnserve encodes them."""
    card = load_model(model_dir).card
    row = tabular_types(card, 1024).row
    numeric, codes, _ = TabularEncoder(card).encode([row.model_validate(r).__dict__ for r in rows])
    request = pb.ModelInferRequest(model_name=card.name)
    for spec, array in zip(card.inputs, (numeric, codes), strict=True):
        array = np.ascontiguousarray(array, dtype=spec.dtype)
        request.inputs.add(name=spec.name, datatype={"float32": "FP32", "int64": "INT64"}[spec.dtype],
                           shape=list(array.shape))  # fmt: skip
        request.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return request.SerializeToString()


def framed(message: bytes) -> bytes:
    """A message as gRPC puts it on the wire: not compressed, its 4-byte big-endian length, the message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def answered(target: str, message: bytes, metadata: tuple = ()) -> pb.ModelInferResponse:
    """The answer to `message` at host:port (grpc.RpcError when it is refused)."""
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(pb.ModelInferRequest.FromString(message),
                                                                    metadata=metadata, timeout=30)  # fmt: skip


def h2load(target: str, message: bytes, connections: int, seconds: int, per_request: int) -> dict:
    """h2load against ModelInfer at host:port for `seconds`, one call at a time per connection; the same
    figures as the bench's wrk runs (throughput in rows or requests per second, p50 and p99 in ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "log"
        body.write_bytes(framed(message))
        out = subprocess.run(
            ["h2load", f"-c{connections}", "-t2", "-m1", "-D", str(seconds), "-d", str(body), "--log-file", str(log),
             "-H", "content-type: application/grpc", "-H", "te: trailers", f"http://{target}{INFER}"],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
        lines = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    statuses = [int(fields[1]) for fields in lines]
    micros = np.array([float(fields[2]) for fields in lines])
    done = len(lines)
    return {
        "throughput": done / seconds * per_request,
        "requests": done,
        "p50": float(np.percentile(micros, 50)) / 1000 if done else 0.0,
        "p99": float(np.percentile(micros, 99)) / 1000 if done else 0.0,
        "non_2xx": sum(not 200 <= s < 300 for s in statuses),
        "socket_errors": "" if " 0 failed, 0 errored" in out else out.split("requests:", 1)[-1].split("\n", 1)[0],
    }
