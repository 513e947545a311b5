"""The Open Inference Protocol (KServe V2 / Triton HTTP) beside the typed endpoints, on the same sessions.

Supported: server and model metadata, liveness and readiness, inference in JSON and with the binary
tensor extension (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data_output`,
per-output `binary_data`), the classification extension (`classification: k` -> "score:index:label"),
and gzip/deflate request bodies. Inputs are the graph's own tensors as the card describes them; every
request runs through the model's adapter (its batcher, its threading, the typed endpoints' limits).
Errors are {"error": "..."}: 404 for an unknown model or version, 400 for anything wrong with the
request, including protocol fields of the wrong shape, 413 past the body or batch limits.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
from starlette.types import Receive, Send

from service.dataplane.plane import DataPlane
from service.errors import PayloadTooLarge, ServiceError
from service.models.control import Control
from service.models.registry import Registry
from service.protocol import views
from service.protocol.bodies import read_body
from service.protocol.context import REQUEST_KEY, Context
from service.protocol.router import Route
from service.protocol.transport import respond
from service.runtime import LoadedModel
from service.settings import Settings
from service.tasks.base import Adapter

EXTENSIONS = ["binary_tensor_data", "classification"]
OIP_DTYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "uint8": "UINT8",
              "float16": "FP16", "object": "BYTES"}  # fmt: skip


class OIPError(ServiceError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.message}


class OIP:
    def __init__(self, registry: Registry, plane: DataPlane, control: Control, settings: Settings,
                 server_version: str) -> None:  # fmt: skip
        self.registry, self.plane, self.control = registry, plane, control
        self.server_version = server_version
        self.max_body = settings.max_body_bytes

    def routes(self) -> list[Route]:
        name = self.labelled_by_name
        model, version = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
        return [
            Route("/v2", ("GET",), self.server_metadata),
            Route("/v2/", ("GET",), self.server_metadata),
            Route("/v2/health/live", ("GET",), self.live),
            Route("/v2/health/ready", ("GET",), self.ready),
            *(r for prefix in (model, version) for r in (
                Route(prefix, ("GET",), self.model_metadata, label=name),
                Route(prefix + "/ready", ("GET",), self.model_ready, label=name),
                Route(prefix + "/infer", ("POST",), self.infer, prediction=True, label=name),
            )),
            Route("/v2/repository/index", ("POST",), self.index),
            Route("/v2/repository/models/{name}/load", ("POST",), self.load, label=name),
            Route("/v2/repository/models/{name}/unload", ("POST",), self.unload, label=name),
        ]  # fmt: skip

    def labelled_by_name(self, route: Route, params: dict[str, str]) -> str | None:
        return (
            route.template.replace("{name}", params["name"]) if params["name"] in self.registry.table.models else None
        )

    async def server_metadata(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        await respond(
            ctx, send, 200, _json({"name": "nnserve", "version": self.server_version, "extensions": EXTENSIONS})
        )

    async def live(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        await respond(ctx, send, 200, b"", media_type=None)

    async def ready(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        await respond(ctx, send, 200 if self.registry.ready else 503, b"", media_type=None)

    def _adapter(self, params: dict[str, str]) -> Adapter:
        """The version named in the path, else the default one."""
        return _oip(lambda: self.registry.get(params["name"], params.get("version")))

    # --- the model repository extension (Triton's): management, service/models/control.py ----------------------
    async def index(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        """Read-only, so open without the management setting (as Triton's is): loading and unloading are not."""
        body = await _json_object(ctx, receive, self.max_body)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise OIPError(400, f'"ready" must be true or false, got {_short(ready)}')
        entries = views.index(self.registry)
        await respond(ctx, send, 200, _json([e for e in entries if e["state"] == "READY"] if ready else entries))

    async def load(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        body = await _json_object(ctx, receive, self.max_body)
        if _parameters(body, "the load request"):
            raise OIPError(400, "load parameters (a config or files override) are not supported: change the folder")
        await _managed(self.control.load(params["name"]))
        await respond(ctx, send, 200, b"{}")

    async def unload(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        _parameters(await _json_object(ctx, receive, self.max_body), "the unload request")
        await _managed(self.control.unload(params["name"]))
        await respond(ctx, send, 200, b"{}")

    async def model_ready(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        self._adapter(params)
        await respond(ctx, send, 200, b"", media_type=None)

    async def model_metadata(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        adapter = self._adapter(params)
        versions = list(self.registry.served(adapter.name).versions)
        await respond(ctx, send, 200, _json({**metadata(adapter), "versions": versions}))

    async def infer(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        """The version named in the path, else the default or the canary (the same draw as /v1)."""
        routed = _oip(lambda: self.plane.route(params["name"], params.get("version"), ctx.header(REQUEST_KEY)))
        adapter = routed.adapter
        model = adapter.model
        try:
            body = await read_body(ctx, receive, self.max_body)  # decoded: gzip, deflate
        except PayloadTooLarge:
            raise OIPError(413, f"request body over {self.max_body} bytes (decoded)") from None
        except ServiceError as e:  # an encoding it does not take, data that is not what it says
            raise OIPError(e.status, e.message) from None
        header, binary = _split(body, ctx.header(b"inference-header-content-length") or None)
        inputs = _inputs(model, header, binary, adapter.batch_limit())
        ctx.answered_by(adapter.name, adapter.version)
        output = await self.plane.infer(routed, tuple(inputs[name] for name in model.input_names))
        name = model.card.graph.output if model.card.graph is not None else model.card.outputs[0].name
        await _respond(ctx, send, model, header, {name: output})


def _oip(lookup: Any) -> Any:
    """What `lookup` finds, its client errors in the protocol's shape ({"error": ...})."""
    try:
        return lookup()
    except ServiceError as e:
        raise OIPError(e.status, e.message) from None  # the message names the model (cut when long)


def _json(payload: Any) -> bytes:
    """As the protocol's answers have always been written (Starlette's JSONResponse): compact, UTF-8."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


async def _json_object(ctx: Context, receive: Receive, limit: int) -> dict[str, Any]:
    """A management request's body: empty, or a JSON object."""
    try:
        raw = await read_body(ctx, receive, limit)
    except PayloadTooLarge:
        raise OIPError(413, f"request body over {limit} bytes") from None
    except ServiceError as e:
        raise OIPError(e.status, e.message) from None
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as e:
        raise OIPError(400, f"the request is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise OIPError(400, f"the request must be a JSON object, got {_short(body)}")
    return body


async def _managed(call: Any) -> None:
    try:
        await call
    except ServiceError as e:
        raise OIPError(e.status, e.message) from None


def metadata(adapter: Adapter) -> dict[str, Any]:
    """The graph's tensors from the card, and, from the adapter, how to build them."""
    card = adapter.model.card

    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "datatype": OIP_DTYPES[t.dtype], "shape": [-1 if d == "N" else d for d in t.shape]}

    return {"name": card.name, "versions": [card.version], "platform": "onnxruntime_onnx",
            "inputs": [tensor(t) for t in card.inputs], "outputs": [tensor(t) for t in card.outputs],
            "parameters": adapter.describe()}  # fmt: skip


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header, checked for the protocol's shape, and the binary tail (empty without the
    binary extension)."""
    n = len(body)
    if header_length is not None:
        if not header_length.strip().isdigit():
            raise OIPError(400, f"Inference-Header-Content-Length must be a byte count, got {header_length!r}")
        if (n := int(header_length)) > len(body):
            raise OIPError(400, f"Inference-Header-Content-Length {n} is larger than the body ({len(body)} bytes)")
    try:
        header = json.loads(body[:n])
    except (ValueError, RecursionError) as e:
        raise OIPError(400, f"the inference request is not valid JSON: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise OIPError(400, 'the inference request must be a JSON object with an "inputs" list')
    _parameters(header, "the request")
    if not isinstance(header.get("outputs", []), list):
        raise OIPError(400, f'"outputs" must be a list of {{"name": ...}} objects, got {_short(header["outputs"])}')
    for kind, items in (("inputs", header["inputs"]), ("outputs", header.get("outputs") or [])):
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise OIPError(400, f'{kind}[{i}] must be an object with a string "name", got {_short(item)}')
            _parameters(item, f"{kind[:-1]} {item['name']}")
    return header, body[n:]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    """An item's `parameters`: absent, or an object (the protocol's parameters are always a map)."""
    params = item.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise OIPError(400, f"{where}: parameters must be an object, got {_short(params)}")
    return params or {}


def _inputs(model: LoadedModel, header: dict[str, Any], binary: bytes, limit: tuple[int, str]) -> dict[str, np.ndarray]:
    """Checks every input against the graph's signature and the batch limit, from the declared shapes
    before any array is made; returns the arrays the session takes."""
    expected = {t.name: t for t in model.card.inputs}
    names = [i["name"] for i in header["inputs"]]
    if sorted(names) != sorted(expected):
        raise OIPError(400, f"model {model.name} takes inputs {sorted(expected)}, got {names}")
    batch_sizes = set()
    for item in header["inputs"]:
        spec, shape = expected[item["name"]], item.get("shape")
        want = OIP_DTYPES[spec.dtype]
        if item.get("datatype") != want:
            raise OIPError(400, f"input {spec.name}: datatype must be {want}, got {_short(item.get('datatype'))}")
        if (
            not isinstance(shape, list)
            or len(shape) != len(spec.shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or any(s != "N" and d != s for d, s in zip(shape, spec.shape, strict=True))
        ):
            want_shape = [-1 if d == "N" else d for d in spec.shape]
            raise OIPError(400, f"input {spec.name}: shape must be {want_shape}, -1 given as the batch's size, "
                                f"got {_short(shape)}")  # fmt: skip
        rows = max((d for d, s in zip(shape, spec.shape, strict=True) if s == "N"), default=1)
        batch_sizes.add(rows)
        if rows > limit[0]:
            raise OIPError(413, f"input {spec.name}: a batch of {rows} is over the limit of {limit[0]} ({limit[1]})")
        if rows == 0:
            raise OIPError(400, f"input {spec.name}: shape {shape} holds no rows")
    if len(batch_sizes) > 1:
        raise OIPError(400, f"inputs {names}: batch sizes {sorted(batch_sizes)} differ; every input needs the same")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in header["inputs"]:
        spec, shape = expected[item["name"]], item["shape"]
        count, dtype = math.prod(shape), np.dtype(spec.dtype)
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = _from_json(spec.name, item.get("data"), dtype, count)
        elif not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise OIPError(400, f"input {spec.name}: binary_data_size {size!r} runs past the binary data "
                                f"({len(binary) - offset} bytes left)")  # fmt: skip
        elif dtype.kind == "O":
            array = _strings(spec.name, binary[offset : offset + size], count)
            offset += size
        elif size != count * dtype.itemsize:
            raise OIPError(400, f"input {spec.name}: binary_data_size {size} is not shape {shape} x "
                                f"{dtype.itemsize} bytes = {count * dtype.itemsize}")  # fmt: skip
        else:
            array = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
            offset += size
        arrays[spec.name] = np.ascontiguousarray(array.reshape(shape), dtype=dtype)
    if offset != len(binary):
        raise OIPError(400, f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return arrays


def _strings(name: str, data: bytes, count: int) -> np.ndarray:
    """The protocol's binary BYTES: each element a 4-byte little-endian length, then its UTF-8 bytes."""
    values, at = [], 0
    while at < len(data) and len(values) < count:
        (length,) = struct.unpack_from("<I", data, at) if at + 4 <= len(data) else (len(data),)  # short: too long
        if at + 4 + length > len(data):
            raise OIPError(400, f"input {name}: element {len(values)}'s length runs past its binary_data_size")
        try:
            values.append(data[at + 4 : at + 4 + length].decode())
        except UnicodeDecodeError:
            raise OIPError(400, f"input {name}: element {len(values)} is not UTF-8 text") from None
        at += 4 + length
    if len(values) != count or at != len(data):
        raise OIPError(400, f"input {name}: its binary_data_size does not hold exactly {count} length-prefixed strings")
    return np.array(values, dtype=object)


def _from_json(name: str, data: Any, dtype: np.dtype, count: int) -> np.ndarray:
    if data is None:
        raise OIPError(400, f"input {name}: no data (neither `data` nor parameters.binary_data_size)")
    if dtype.kind == "O":  # BYTES as JSON: strings
        try:
            flat = np.asarray(data, dtype=object).ravel() if isinstance(data, list) else None
        except ValueError:  # ragged lists
            flat = None
        if flat is None or flat.size != count or not all(isinstance(v, str) for v in flat):
            raise OIPError(400, f"input {name}: BYTES data must be a (nested) list of {count} strings")
        return flat
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


async def _respond(
    ctx: Context, send: Send, model: LoadedModel, header: dict[str, Any], results: dict[str, np.ndarray]
) -> None:
    binary_default = bool(_parameters(header, "the request").get("binary_data_output", False))
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for item in header.get("outputs") or [{"name": name} for name in results]:
        name, params = item["name"], item.get("parameters") or {}
        if name not in results:
            raise OIPError(400, f"model {model.name} has outputs {sorted(results)}, not {name!r}")
        value = results[name]
        if params.get("classification") is not None:
            value = _classify(model, value, params["classification"])
        strings = value.dtype == object  # the classification extension's "score:index:label"
        entry: dict[str, Any] = {"name": name, "shape": list(value.shape),
                                 "datatype": "BYTES" if strings else OIP_DTYPES[value.dtype.name]}  # fmt: skip
        if params.get("binary_data", binary_default):
            if strings:  # the protocol's BYTES: each string prefixed with its 4-byte length
                data = b"".join(struct.pack("<I", len(s)) + s for s in (x.encode() for x in value.ravel()))
            else:
                data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            chunks.append(data)
            entry["parameters"] = {"binary_data_size": len(data)}
        else:
            entry["data"] = value.ravel().tolist()
        outputs.append(entry)
    answer = {"model_name": model.name, "model_version": model.card.version, "outputs": outputs}
    head = json.dumps(answer | ({"id": header["id"]} if "id" in header else {})).encode()
    if not chunks:
        await respond(ctx, send, 200, head)
        return
    headers = [(b"inference-header-content-length", str(len(head)).encode())]
    await respond(ctx, send, 200, head + b"".join(chunks), headers, media_type=b"application/octet-stream")


def _classify(model: LoadedModel, scores: np.ndarray, k: Any) -> np.ndarray:
    """Triton's classification extension: the top-k of each row as "score:index:label" strings."""
    labels = model.card.labels
    if not labels:
        raise OIPError(400, f"model {model.name} has no labels: the classification extension does not apply")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(labels):
        raise OIPError(400, f"classification must be an integer from 1 to {len(labels)}, got {k!r}")
    rows = scores.reshape(scores.shape[0], -1)
    best = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    return np.array([[f"{rows[r, i]:f}:{i}:{labels[i]}" for i in row] for r, row in enumerate(best)], dtype=object)
