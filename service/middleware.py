"""The HTTP edge of the prediction routes: body size, content type, and the shape of client errors.

BentoML validates the request with our pydantic types and answers 400 with
{"error": "N validation error for XIODescriptor", "detail": [{type, loc, msg}]}: the field and the
expectation, but not the value received, and an internal class name as the summary. Its other 4xx
answers are a JSON list (`[{"error": ...}]`). This middleware reads the request body once (refusing
it past the size limit), checks the content type, and on a 4xx answer rewrites the body to our
shape: {"error": summary, "detail": [{loc, msg, received, type}]}. Successful answers pass through
untouched.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType, field_error

log = logging.getLogger(__name__)

JSON, MULTIPART = "application/json", "multipart/form-data"


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, routes: dict[str, str], file_fields: dict[str, str], max_body_bytes: int) -> None:
        self.app = app
        self.routes = routes  # path -> the media type it takes
        self.file_fields = file_fields  # multipart path -> the field that must carry files
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            self._check_content_type(headers.get("content-type", ""), self.routes[scope["path"]])
            body = await self._read_body(receive, headers.get("content-length"))
            if scope["path"] in self.file_fields:
                check_multipart(body, headers.get("content-type", ""), self.file_fields[scope["path"]])
        except ServiceError as e:
            await send_json(send, e.status, e.body())
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body, the app may wait for a disconnect: pass it through
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 0
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, start
            if message["type"] == "http.response.start":
                status = message["status"]
                if 400 <= status < 500:
                    start = message  # hold it: the body will be rewritten
                    return
            elif message["type"] == "http.response.body" and start:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        rewritten = _rewrite(b"".join(chunks), body, headers.get("content-type", ""))
                    except Exception:  # never let the error path itself fail: keep the status, plain body
                        log.exception("could not reshape a %d answer", status)
                        rewritten = {"error": "bad request", "detail": []}
                    await send_json(send, status, rewritten, start)
                return
            await send(message)

        await self.app(scope, replay, capture)

    @staticmethod
    def _check_content_type(content_type: str, expected: str) -> None:
        media = content_type.split(";")[0].strip().lower()
        if expected == JSON and media in ("", JSON):
            return
        if media == expected:
            return
        raise UnsupportedMediaType(
            f"this route takes {expected}",
            [field_error(["header", "content-type"], expected, content_type or None, "unsupported_media_type")],
        )

    async def _read_body(self, receive: Receive, content_length: str | None) -> bytes:
        limit = self.max_body_bytes
        too_large = PayloadTooLarge(
            f"request body over {limit} bytes (NNSERVE_MAX_BODY_BYTES)",
            [
                field_error(
                    ["body"], f"at most {limit} bytes", content_length or f"more than {limit} bytes", "too_large"
                )
            ],
        )
        if content_length is not None and content_length.isdigit() and int(content_length) > limit:
            raise too_large  # refused without reading a byte of it
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)


def check_multipart(body: bytes, content_type: str, file_field: str) -> None:
    """The body must be well-formed multipart, and every `file_field` part must be a file upload.

    BentoML would answer a malformed body with a 500, and would treat a text value in a file field as
    a URL to download: neither is acceptable for a client mistake."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    problems: list[dict[str, Any]] = []
    ended = False
    header_field = b""
    disposition = b""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        nonlocal header_field
        header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        nonlocal disposition
        if header_field.lower() == b"content-disposition":
            disposition += data[start:end]

    def on_header_end() -> None:
        nonlocal header_field
        header_field = b""

    def on_headers_finished() -> None:
        nonlocal disposition
        _, part = parse_options_header(disposition)
        if part.get(b"name", b"").decode("latin-1") == file_field and b"filename" not in part:
            problems.append(
                field_error(
                    [file_field], "a file upload (multipart part with a filename)", "a text value", "not_a_file"
                )
            )
        disposition = b""

    def on_end() -> None:
        nonlocal ended
        ended = True

    malformed = InvalidInput(
        "malformed multipart body",
        [field_error(["body"], "multipart/form-data with its boundary", content_type, "multipart")],
    )
    if not boundary:
        raise malformed
    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise malformed from None
    if not ended:
        raise malformed
    if problems:
        raise InvalidInput(f"{file_field} must be a file", problems)


def _rewrite(answer: bytes, request_body: bytes, content_type: str) -> dict[str, Any]:
    """BentoML's 4xx body -> ours; `received` values are looked up in the request by `loc`."""
    try:
        data = json.loads(answer)
    except ValueError:
        return {"error": answer.decode("utf-8", "replace")[:200] or "bad request", "detail": []}
    if isinstance(data, list) and data and isinstance(data[0], dict):  # BentoML's list-wrapped errors
        data = data[0]
    if not isinstance(data, dict):
        return {"error": "bad request", "detail": []}
    if "detail" not in data or not isinstance(data["detail"], list):
        return {"error": str(data.get("error", "bad request")), "detail": []}
    if all(isinstance(d, dict) and "received" in d for d in data["detail"]):
        return data  # already ours (raised inside an endpoint), including an empty detail list
    request = _parse_json(request_body) if content_type.split(";")[0].strip() in ("", JSON) else None
    detail = [
        field_error(
            item.get("loc", []), item.get("msg", ""), _lookup(request, item.get("loc", [])), item.get("type", "")
        )
        for item in data["detail"]
        if isinstance(item, dict)
    ]
    fields = ", ".join(".".join(str(p) for p in d["loc"]) or "body" for d in detail)
    return {"error": f"invalid request: {len(detail)} problem(s) with {fields}", "detail": detail}


_MISSING = object()


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return _MISSING


def _lookup(request: Any, loc: list[Any]) -> Any:
    """The value at `loc` in the request; None when it is missing (a missing field) or unparseable."""
    node = request
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        else:
            return None
    if node is _MISSING:
        return None
    if isinstance(node, (dict, list)):
        text = json.dumps(node)
        return text if len(text) <= 200 else text[:200] + "..."
    if isinstance(node, str) and len(node) > 200:
        return node[:200] + "..."
    if isinstance(node, int) and not isinstance(node, bool) and abs(node) > 2**63:
        return str(node)  # JSON consumers may not hold it as a number
    if isinstance(node, float) and not math.isfinite(node):
        return str(node)  # NaN and Infinity are not JSON
    return node


async def send_json(send: Send, status: int, payload: dict[str, Any], start: Message | None = None) -> None:
    """Answers `payload` as JSON; headers of `start` (an intercepted or prepared start message) are kept."""
    body = json.dumps(payload).encode()
    headers = [
        (k, v) for k, v in (start or {}).get("headers", []) if k.lower() not in (b"content-length", b"content-type")
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class JsonErrors:
    """Every error answer in JSON: Starlette's and BentoML's plain-text ones (no such route, wrong
    method, not ready) become {"error": text, "detail": []}. Other answers pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if message["status"] >= 400 and content_type.startswith(b"text/plain"):
                    start = message
                    return
            elif message["type"] == "http.response.body" and start:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    text = b"".join(chunks).decode("utf-8", "replace").strip()
                    await send_json(send, start["status"], {"error": text or "error", "detail": []}, start)
                return
            await send(message)

        await self.app(scope, receive, capture)
