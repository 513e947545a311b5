"""The Open Inference Protocol (KServe V2 / Triton HTTP) beside the typed endpoints, on the same sessions.

Supported: server and model metadata, liveness and readiness, inference in JSON and with the binary
tensor extension (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data_output`,
per-output `binary_data`), the classification extension (`classification: k` -> "score:index:label"),
and gzip/deflate request bodies. Inputs are the graph's own tensors, described by the model card: the
tabular models take `numeric` and `categorical`, the tagger takes decoded RGB pixels. Errors are
{"error": "..."}: 404 for an unknown model or version, 400 for anything wrong with the request.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.runtime import LoadedModel

EXTENSIONS = ["binary_tensor_data", "classification"]
HEADER_LENGTH = "inference-header-content-length"
OIP_DTYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "uint8": "UINT8",
              "float16": "FP16"}  # fmt: skip
NUMPY_DTYPES = {v: k for k, v in OIP_DTYPES.items()}


class OIPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OIP:
    """The /v2 routes over a registry getter (the registry exists once BentoML creates the service)."""

    def __init__(self, registry: Any, server_version: str, max_body_bytes: int) -> None:
        self.registry = registry
        self.server_version = server_version
        self.max_body_bytes = max_body_bytes
        versioned = "/models/{name}/versions/{version}"
        self.app = Starlette(
            routes=[
                Route("/", self.server_metadata, methods=["GET"]),
                Route("/health/live", self.live, methods=["GET"]),
                Route("/health/ready", self.ready, methods=["GET"]),
                Route("/models/{name}", self.model_metadata, methods=["GET"]),
                Route(versioned, self.model_metadata, methods=["GET"]),
                Route("/models/{name}/ready", self.model_ready, methods=["GET"]),
                Route(versioned + "/ready", self.model_ready, methods=["GET"]),
                Route("/models/{name}/infer", self.infer, methods=["POST"]),
                Route(versioned + "/infer", self.infer, methods=["POST"]),
            ],
            exception_handlers={OIPError: _error_response, HTTPException: _http_error},
        )

    # --- metadata and health -----------------------------------------------------------------------
    async def server_metadata(self, _: Request) -> JSONResponse:
        return JSONResponse({"name": "nnserve", "version": self.server_version, "extensions": EXTENSIONS})

    async def live(self, _: Request) -> Response:
        return Response(status_code=200)

    async def ready(self, _: Request) -> Response:
        return Response(status_code=200 if self.registry().ready else 503)

    def _model(self, request: Request) -> LoadedModel:
        name = request.path_params["name"]
        try:
            model = self.registry().get(name)
        except ServiceError as e:
            raise OIPError(404 if e.status == 404 else e.status, f"model {name!r}: {e.message}") from None
        version = request.path_params.get("version")
        if version is not None and version != model.card.version:
            raise OIPError(404, f"model {name!r} has no version {version!r}; it serves version {model.card.version!r}")
        return model

    async def model_ready(self, request: Request) -> Response:
        self._model(request)
        return Response(status_code=200)

    async def model_metadata(self, request: Request) -> JSONResponse:
        return JSONResponse(metadata(self._model(request)))

    # --- inference ---------------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        model = self._model(request)
        body = _decompress(await self._read(request), request.headers.get("content-encoding", ""), self.max_body_bytes)
        header, binary = _split(body, request.headers.get(HEADER_LENGTH))
        inputs = _inputs(model, header, binary)
        batcher = self.registry().batchers.get(model.name)
        if batcher is not None:  # shared with /v1's requests for the same model
            outputs = [await batcher(*(inputs[name] for name in model.input_names))]
        elif model.card.image is None:  # microseconds: a thread hop would cost more than the model
            outputs = model.session.run(None, inputs)
        else:
            outputs = await anyio.to_thread.run_sync(lambda: model.session.run(None, inputs))
        return _response(model, header, dict(zip((t.name for t in model.card.outputs), outputs, strict=True)))

    async def _read(self, request: Request) -> bytes:
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > self.max_body_bytes:
            raise OIPError(413, f"request body over {self.max_body_bytes} bytes")
        parts, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > self.max_body_bytes:
                raise OIPError(413, f"request body over {self.max_body_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)


class ServerMetadataPath:
    """`GET /v2` is the server metadata; a Starlette mount at /v2 only matches /v2/..., and answers the
    bare path with a redirect that HTTP clients such as tritonclient do not follow. Rewrite it."""

    def __init__(self, app: ASGIApp, prefix: str = "/v2") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.prefix:
            scope = {**scope, "path": self.prefix + "/", "raw_path": (self.prefix + "/").encode()}
        await self.app(scope, receive, send)


def metadata(model: LoadedModel) -> dict[str, Any]:
    """Model metadata in OIP terms, derived from the card (which the loader checked against the graph)."""
    card = model.card

    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "datatype": OIP_DTYPES[t.dtype], "shape": [-1 if d == "N" else d for d in t.shape]}

    parameters: dict[str, Any] = {"task": card.task, "description": card.description}
    if card.numeric or card.categorical:
        parameters["numeric_columns"] = [f.name for f in card.numeric]
        parameters["categorical_columns"] = [f.name for f in card.categorical]
        parameters["input_note"] = "raw values in column order; categorical columns as integer codes (see the card)"
    if card.image is not None:
        h, w = card.image.size
        parameters["labels"] = card.labels
        parameters["input_note"] = (
            f"decoded RGB pixels as the graph takes them: {card.image.dtype} {card.image.layout} {h}x{w}"
            + ("" if card.image.normalise_in_graph else ", normalised with the card's mean and std")
            + "; photo files go to POST /v1/image-tagging/predict"
        )
    return {
        "name": card.name,
        "versions": [card.version],
        "platform": "onnxruntime_onnx",
        "inputs": [tensor(t) for t in card.inputs],
        "outputs": [tensor(t) for t in card.outputs],
        "parameters": parameters,
    }


async def _error_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OIPError)
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404/405 answers (no such route), as the protocol's {"error": ...}."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OIPError(415, f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    # wbits: 31 reads gzip, 15 zlib-wrapped deflate; decompressing in bounded steps stops zip bombs.
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise OIPError(400, f"body is not valid {encoding} data: {e}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise OIPError(413, f"decompressed body over {limit} bytes")
    return out


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tail (empty without the binary extension)."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.strip().isdigit():
            raise OIPError(400, f"Inference-Header-Content-Length must be a byte count, got {header_length!r}")
        n = int(header_length)
        if n > len(body):
            raise OIPError(400, f"Inference-Header-Content-Length {n} is larger than the body ({len(body)} bytes)")
        json_part, binary = body[:n], body[n:]
    try:
        header = json.loads(json_part)
    except (ValueError, RecursionError) as e:
        raise OIPError(400, f"the inference request is not valid JSON: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise OIPError(400, 'the inference request must be a JSON object with an "inputs" list')
    return header, binary


def _inputs(model: LoadedModel, header: dict[str, Any], binary: bytes) -> dict[str, np.ndarray]:
    """Checks every input against the graph's signature; returns the arrays the session takes."""
    expected = {t.name: t for t in model.card.inputs}
    given = header["inputs"]
    names = [i.get("name") if isinstance(i, dict) else None for i in given]
    if sorted(map(str, names)) != sorted(expected):
        raise OIPError(400, f"model {model.name} takes inputs {sorted(expected)}, got {names}")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in given:
        spec = expected[item["name"]]
        want = OIP_DTYPES[spec.dtype]
        if item.get("datatype") != want:
            raise OIPError(400, f"input {spec.name}: datatype must be {want}, got {item.get('datatype')!r}")
        shape = item.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != len(spec.shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or any(s != "N" and d != s for d, s in zip(shape, spec.shape, strict=True))
        ):
            want_shape = [-1 if d == "N" else d for d in spec.shape]
            raise OIPError(400, f"input {spec.name}: shape must be {want_shape} (-1: any batch size), got {shape!r}")
        count = math.prod(shape)
        dtype = np.dtype(spec.dtype)
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise OIPError(400, f"input {spec.name}: binary_data_size {size!r} runs past the binary data "
                                    f"({len(binary) - offset} bytes left)")  # fmt: skip
            if size != count * dtype.itemsize:
                raise OIPError(400, f"input {spec.name}: binary_data_size {size} is not shape {shape} x "
                                    f"{dtype.itemsize} bytes = {count * dtype.itemsize}")  # fmt: skip
            array = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
            offset += size
        else:
            array = _from_json(spec.name, item.get("data"), dtype, count)
        arrays[spec.name] = np.ascontiguousarray(array.reshape(shape), dtype=dtype)
    if offset != len(binary):
        raise OIPError(400, f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return arrays


def _from_json(name: str, data: Any, dtype: np.dtype, count: int) -> np.ndarray:
    if data is None:
        raise OIPError(400, f"input {name}: no data (neither `data` nor parameters.binary_data_size)")
    try:
        array = np.asarray(data, dtype=np.float64 if dtype.kind == "f" else object).ravel()
    except (ValueError, TypeError):
        raise OIPError(400, f"input {name}: data must be a (nested) list of numbers") from None
    if array.size != count:
        raise OIPError(400, f"input {name}: {array.size} values do not fill its shape ({count} elements)")
    if dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise OIPError(400, f"input {name}: NaN or Infinity in data")
        return array.astype(dtype)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in array):
        raise OIPError(400, f"input {name}: datatype {OIP_DTYPES[dtype.name]} needs integers")
    info = np.iinfo(dtype)
    if any(v < info.min or v > info.max for v in array):
        raise OIPError(400, f"input {name}: a value does not fit {OIP_DTYPES[dtype.name]}")
    return array.astype(dtype)


def _response(model: LoadedModel, header: dict[str, Any], results: dict[str, np.ndarray]) -> Response:
    params = header.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False))
    requested = header.get("outputs") or [{"name": name} for name in results]
    if not isinstance(requested, list):
        raise OIPError(400, '"outputs" must be a list')
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in results:
            raise OIPError(400, f"model {model.name} has outputs {sorted(results)}, not {name!r}")
        out_params = item.get("parameters") or {}
        value = results[name]
        k = out_params.get("classification")
        if k is not None:
            value = _classify(model, value, k)
        as_binary = bool(out_params.get("binary_data", binary_default))
        entry: dict[str, Any] = {"name": name, "shape": list(value.shape)}
        if value.dtype == object:
            entry["datatype"] = "BYTES"
            if as_binary:
                data = b"".join(struct.pack("<I", len(s)) + s for s in (x.encode() for x in value.ravel()))
                chunks.append(data)
                entry["parameters"] = {"binary_data_size": len(data)}
            else:
                entry["data"] = value.ravel().tolist()
        else:
            entry["datatype"] = OIP_DTYPES[value.dtype.name]
            if as_binary:
                data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
                chunks.append(data)
                entry["parameters"] = {"binary_data_size": len(data)}
            else:
                entry["data"] = value.ravel().tolist()
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": model.name, "model_version": model.card.version, "outputs": outputs}
    if "id" in header:
        answer["id"] = header["id"]
    head = json.dumps(answer).encode()
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(
        head + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


def _classify(model: LoadedModel, scores: np.ndarray, k: Any) -> np.ndarray:
    """Triton's classification extension: the top-k of each row as "score:index:label" strings."""
    if not model.card.labels:
        raise OIPError(400, f"model {model.name} has no labels: the classification extension does not apply")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(model.card.labels):
        raise OIPError(400, f"classification must be an integer from 1 to {len(model.card.labels)}, got {k!r}")
    rows = scores.reshape(scores.shape[0], -1)
    best = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    out = np.empty(best.shape, dtype=object)
    for r, row in enumerate(best):
        for c, index in enumerate(row):
            out[r, c] = f"{rows[r, index]:f}:{index}:{model.card.labels[index]}"
    return out
