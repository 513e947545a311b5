"""The HTTP edge: everything a request meets before a model, in one layer and in this order.

0. a WebSocket handshake is refused (403): no route takes one, and none may reach a route unchecked;
1. a request id on every answer (X-BentoML-Request-ID, as BentoML's own routes carry);
2. API keys, when configured (probes and /metrics exempt): 401, or 400 for two credentials;
3. the pages this service answers itself: /readyz with the worker's health, the OpenAPI document
   (/docs.json), BentoML's client schema (/schema.json), the docs UI (/docs and /, no outside request;
   NNSERVE_DOCS_UI=false turns it off: 404 there and for the pages' assets, never BentoML's own page);
4. predictions (/v1/<model>/predict..., /v2/.../infer): refused with 503 + Connection: close while
   the worker drains, 503 + Retry-After beyond admission control, counted in flight otherwise;
5. every error answer in JSON: BentoML's and Starlette's plain-text 404/405 become {"error", "detail"}
   with their headers (Allow) kept.

Bodies are read, limited and parsed by the routes that take them (service/protocol/bodies.py), once. Before
this edge sit only BentoML's own layers: metrics, the request timeout (504), the access log (written
by service/protocol/access_log.py in BentoML's place).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bentoml._internal.context import trace_context
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge
from service.protocol.admission import Admission, is_prediction
from service.protocol.auth import CHALLENGE, ApiKeyAuth
from service.protocol.bodies import ClientDisconnected, read_body
from service.protocol.transport import send_bytes, send_error, send_json
from service.settings import Settings
from service.shutdown import drain
from service.telemetry import Answer, count_prediction, current_series, in_flight

log = logging.getLogger(__name__)
REQUEST_ID = b"x-bentoml-request-id"
DOCS_PAGE = (Path(__file__).parent / "static" / "docs.html").read_bytes()  # Swagger UI, from BentoML's assets
DOCS_ASSETS = ("/static_content/", "/assets/")  # BentoML's page assets (its old and new index), ours too


class Edge:
    def __init__(self, app: ASGIApp, settings: Settings, auth: ApiKeyAuth, server: Callable[[], Any]) -> None:
        self.app = app
        self.auth = auth
        self.server = server  # the worker's Server (service/worker.py) once built, else None
        self.admission = Admission(settings.max_in_flight, settings.max_queue)
        self.max_body = settings.max_body_bytes
        self.pages = {"/readyz": self.readyz, "/docs.json": self.openapi, "/schema.json": self.client_schema}
        # The docs pages, ours, or none at all: with the setting off BentoML's own index page (which
        # loads Google Tag Manager) and its assets must not answer in their place.
        self.pages |= dict.fromkeys(("/docs", "/"), self.docs if settings.docs_ui else self.no_page)
        self.docs_assets = () if settings.docs_ui else DOCS_ASSETS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # no route takes one: refused before the keys, the routes, anything
                await send({"type": "websocket.close", "code": 1008})  # before accepting: the server answers 403
                return
            await self.app(scope, receive, send)  # lifespan
            return
        if trace_context.request_id is not None:
            send = _with_header(send, REQUEST_ID, format(trace_context.request_id, "016x").encode())
        path = scope["path"]
        refused = self.auth.refusal(path, scope["headers"])
        if refused is not None:
            await send_error(send, *refused, CHALLENGE)
            return
        if scope["method"] in ("GET", "HEAD") and path in self.pages:
            await self.pages[path](send)
            return
        if path.startswith(self.docs_assets):
            await self.no_page(send)
            return
        if path == "/v2":  # a mount at /v2 takes /v2/...; the protocol's server metadata is at /v2 itself
            scope = {**scope, "path": "/v2/", "raw_path": b"/v2/"}
        # Our routes answer JSON already, but a path BentoML's router does not hand to them (a newline in
        # it, say) gets its plain-text 404: every answer passes the JSON filter.
        send = _json_errors(send)
        if path == "/metrics" and (server := self.server()) is not None:
            send = _current_metrics(send, server.registry)
        if is_prediction(path):
            await self.predict(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        if drain.draining:
            await self.refuse_while_draining(scope, receive, send)
            return
        if self.admission.full():
            await send_error(send, 503, self.admission.refusal(), [(b"retry-after", b"1")])
            return
        await self.admission.acquire()
        drain.in_flight += 1
        gauge = in_flight()  # the autoscaler's metric: 1.6 us per request for the inc and dec (mmap writes)
        gauge.inc()
        answer = scope["nnserve.answer"] = Answer()  # filled in by the route (telemetry.Answer)
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            drain.in_flight -= 1
            gauge.dec()
            self.admission.release()
        if answer.model is not None:  # answered (a cancelled request, a timeout, is not counted)
            count_prediction(answer.model, answer.version, answer.status, time.perf_counter() - start)

    async def refuse_while_draining(self, scope: Scope, receive: Receive, send: Send) -> None:
        """503 on a connection that then closes. An upload under way is read first (within the body
        limit): answering before it has arrived would reset the client's connection mid-upload."""
        try:
            await read_body(scope, receive, self.max_body, decode=False)
        except ClientDisconnected:
            return
        except PayloadTooLarge:
            pass  # past the limit: the connection closes anyway
        headers = [(b"retry-after", b"1"), (b"connection", b"close")]
        await send_error(send, 503, "shutting down: retry on a new connection", headers)

    # --- the pages answered here -------------------------------------------------------------------
    async def readyz(self, send: Send) -> None:
        server = self.server()
        health = server.registry.health() if server is not None else {"ready": False, "error": "starting"}
        await send_json(send, 200 if health["ready"] else 503, health)

    async def openapi(self, send: Send) -> None:
        await self._document(send, "openapi")

    async def client_schema(self, send: Send) -> None:
        await self._document(send, "client_schema")

    async def _document(self, send: Send, which: str) -> None:
        server = self.server()
        if server is None:
            await send_error(send, 503, "starting: the document is built once the models are loaded")
            return
        openapi_doc, client_schema = server.documents()
        await send_bytes(send, 200, openapi_doc if which == "openapi" else client_schema)

    async def docs(self, send: Send) -> None:
        await send_bytes(send, 200, DOCS_PAGE, media_type=b"text/html; charset=utf-8")

    async def no_page(self, send: Send) -> None:
        await send_error(send, 404, "no page here: the API pages are off (NNSERVE_DOCS_UI=false); see /docs.json")


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return wrapped


def _current_metrics(send: Send, registry: Any) -> Send:
    """/metrics as BentoML renders it, less the series of versions no longer served or refused
    (telemetry.current_series)."""
    start: Message = {}
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] == 200:
            start = message
            return
        if message["type"] == "http.response.body" and start:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            table = registry.table
            versions = {(n, v) for n, s in table.models.items() for v in s.versions} | set(table.refused)
            body = current_series(b"".join(chunks), {n for n, _ in versions}, versions)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await send(message)

    return wrapped


def _json_errors(send: Send) -> Send:
    """BentoML's and Starlette's plain-text error answers (no such route, wrong method) as our JSON,
    their headers (Allow) kept; every other answer passes untouched."""
    start: Message = {}
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
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
                dropped = (b"content-length", b"content-type")
                kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in dropped]
                await send_json(send, start["status"], {"error": text or "error", "detail": []}, kept)
            return
        await send(message)

    return wrapped
