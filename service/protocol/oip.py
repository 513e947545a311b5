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
from typing import Any

import numpy as np
from starlette.types import Receive, Send

from service.dataplane.plane import DataPlane
from service.errors import PayloadTooLarge, ServiceError
from service.models.control import Control
from service.models.registry import Registry
from service.protocol import tensors, views
from service.protocol.bodies import read_body
from service.protocol.context import REQUEST_KEY, Context
from service.protocol.router import Route
from service.protocol.tensors import OIP_DTYPES, Declared, OIPError
from service.protocol.transport import respond
from service.runtime import LoadedModel
from service.settings import Settings
from service.tasks.base import Adapter

EXTENSIONS = ["binary_tensor_data", "classification"]


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
    declared = [Declared(i["name"], i.get("datatype"), i.get("shape")) for i in header["inputs"]]
    arrays: dict[str, np.ndarray] = {}
    offset, view = 0, memoryview(binary)
    for item, (spec, shape) in zip(header["inputs"], tensors.checked(model, declared, limit), strict=True):
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arrays[spec.name] = tensors.from_values(spec, item.get("data"), shape)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise OIPError(400, f"input {spec.name}: binary_data_size {size!r} runs past the binary data "
                                f"({len(binary) - offset} bytes left)")  # fmt: skip
        arrays[spec.name] = tensors.from_raw(spec, view[offset : offset + size], shape, f"binary_data_size {size}")
        offset += size
    if offset != len(binary):
        raise OIPError(400, f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return arrays


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
        if params.get("classification") is not None:  # "score:index:label" strings
            value = tensors.classify(model, value, params["classification"])
        entry: dict[str, Any] = {"name": name, "shape": list(value.shape), "datatype": tensors.datatype(value)}
        if params.get("binary_data", binary_default):
            data = tensors.to_raw(value)
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
