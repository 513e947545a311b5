"""The HTTP edge: the one layer every request meets, in this order.

0. a WebSocket handshake is refused (403): no route takes one, and none may reach a route unchecked;
1. a request id (X-BentoML-Request-ID on the answer, in every log line about it) and its Context;
2. API keys, when configured (probes and /metrics exempt): 401, or 400 for two credentials;
3. the pages answered here: /readyz with the worker's health, the OpenAPI document (/docs.json),
   BentoML's client schema (/schema.json), the docs UI (/docs and /; NNSERVE_DOCS_UI=false: 404 there
   and for the pages' assets, never BentoML's own page);
4. the router (service/protocol/router.py): /v1 and /v2. A prediction route is refused with 503 and
   Connection: close while the worker drains, with 503 + Retry-After beyond admission control, and
   counted in flight otherwise; every route answers within NNSERVE_REQUEST_TIMEOUT_S (504);
5. one error handler: a client mistake in its JSON shape, a client that hung up counted apart, anything
   else logged with the request id and answered 500 without internals;
6. what BentoML's request layers did, for less: the access log line and the request metrics, labelled
   by the matched route (service/protocol/access_log.py, http_metrics.py).

Below the edge is only BentoML's own app, for its routes (/metrics, /livez, /healthz), whose plain-text
errors pass through a JSON filter. Bodies are read and parsed by the routes that take them, once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bentoml._internal.context import trace_context
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, ServiceError, received_value
from service.protocol.admission import Admission
from service.protocol.auth import CHALLENGE, ApiKeyAuth
from service.protocol.bodies import ClientDisconnected, read_body
from service.protocol.context import Context
from service.protocol.deadlines import Deadlines
from service.protocol.observe import Observe
from service.protocol.router import UNMATCHED, Handler
from service.protocol.transport import ANSWER, REQUEST_ID, respond, respond_error, respond_json
from service.settings import Settings
from service.shutdown import drain
from service.telemetry import count_disconnect, count_in_flight, current_series

log = logging.getLogger(__name__)
DOCS_PAGE = (Path(__file__).parent / "static" / "docs.html").read_bytes()  # Swagger UI, from BentoML's assets
DOCS_ASSETS = ("/static_content/", "/assets/")  # BentoML's page assets (its old and new index), ours too
BENTOML_ROUTES = ("/metrics", "/livez", "/healthz")  # answered below the edge, by BentoML's own app


class Edge:
    def __init__(self, app: ASGIApp, settings: Settings, auth: ApiKeyAuth, worker: Callable[[], Any],
                 observe: Callable[[], Observe | None] | None = None, admission: Admission | None = None,
                 on_start: Callable[[Any], None] | None = None) -> None:  # fmt: skip
        self.app = app
        self.on_start = on_start  # told of the edge when the worker starts (the server may then call it directly)
        self.auth = auth
        self.worker = worker  # this process's Worker (service/worker.py) once built, else None
        # The access log and request series, made when the worker starts (BentoML's configuration is read
        # then); None where BentoML's own layers write them.
        self.make_observe, self.observe = observe, None
        # The process's admission, shared with its gRPC server (service/app.py), or one of its own.
        self.admission = admission or Admission(settings.max_in_flight, settings.max_queue)
        self.max_body = settings.max_body_bytes
        self.timeout_s = settings.request_timeout_s
        self.deadlines = Deadlines(settings.request_timeout_s)
        self.pages = {"/readyz": self.readyz, "/docs.json": self.openapi, "/schema.json": self.client_schema}
        # The docs pages, ours, or none at all: with the setting off BentoML's own index page (which
        # loads Google Tag Manager) and its assets must not answer in their place.
        self.pages |= dict.fromkeys(("/docs", "/"), self.docs if settings.docs_ui else self.no_page)
        self.docs_assets = () if settings.docs_ui else DOCS_ASSETS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # before accepting: the server answers 403
                await send({"type": "websocket.close", "code": 1008})
                return
            if self.make_observe is not None:  # lifespan: the worker starts
                self.observe, self.make_observe = self.make_observe(), None
            if self.on_start is not None:
                self.on_start(self)
                self.on_start = None
            await self.app(scope, receive, send)
            return
        ctx = Context(random.getrandbits(64), scope["method"], scope["path"], scope["headers"], time.perf_counter())
        ctx.query = scope.get("query_string", b"")
        extensions = scope.get("extensions")
        if extensions:
            ctx.answer = extensions.get(ANSWER)
        trace_context.request_id = ctx.request_id  # for every log line written about this request
        answering = self.resolve(ctx, scope, receive, send)  # the route, and so the request's label, first
        observe = self.observe
        if observe is None:
            await answering
            return
        observe.begin(ctx)
        try:
            await answering
        finally:
            observe.end(ctx, scope)

    def resolve(self, ctx: Context, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """What answers the request (not started yet); its label set on the context."""
        path = ctx.path
        refused = self.auth.refusal(path, ctx.headers)
        if refused is not None:
            ctx.route = path if path in self.pages else UNMATCHED.get(path[1:3], "(unmatched)")
            return respond_error(ctx, send, *refused, CHALLENGE)
        if ctx.method in ("GET", "HEAD") and path in self.pages:
            ctx.route = path
            return self.pages[path](ctx, send)
        if path.startswith(self.docs_assets):
            return self.no_page(ctx, send)
        api = path[1:3] if path[:4] in ("/v1/", "/v2/") or path == "/v2" else None
        if api is None:
            ctx.route = path if path in BENTOML_ROUTES else "(unmatched)"
            return self.below(ctx, scope, receive, send)
        worker = self.worker()
        if worker is None:
            return respond_error(ctx, send, 503, "starting: the models are loading", [(b"retry-after", b"1")])
        match = worker.router.match(ctx.method, path)
        route = match.route
        if route is None:
            ctx.route = UNMATCHED[api]
            return self.unrouted(ctx, send, api, match.allowed)
        ctx.route, ctx.prediction = route.labelled(match.params), route.prediction
        if ctx.prediction:
            return self.predict(ctx, worker, route.handler, match.params, receive, send)
        return self.guarded(ctx, route.handler(ctx, match.params, receive, send), send)

    async def predict(self, ctx: Context, worker: Any, handler: Handler, params: dict[str, str], receive: Receive,
                      send: Send) -> None:  # fmt: skip
        if drain.draining:
            await self.refuse_while_draining(ctx, receive, send)
            return
        if self.admission.full():
            await respond_error(ctx, send, 503, self.admission.refusal(), [(b"retry-after", b"1")])
            return
        if not self.admission.take():
            await self.admission.acquire()
        drain.in_flight += 1
        count_in_flight(1)
        try:
            await self.guarded(ctx, handler(ctx, params, receive, send), send)
        finally:
            drain.in_flight -= 1
            count_in_flight(-1)
            self.admission.release()
        if ctx.model is not None:  # a version took it (not a client that hung up, not one never routed)
            worker.plane.count(ctx.model, ctx.version, ctx.status, time.perf_counter() - ctx.start)

    async def guarded(self, ctx: Context, handling: Any, send: Send) -> None:
        """Awaits a route's handling, within the request timeout; the one place its failures become
        answers (see the module's docstring)."""
        deadline = self.deadlines.enter()
        try:
            await handling
        except asyncio.CancelledError:
            if not deadline.timed_out():
                raise
            if not ctx.status:
                await respond_error(
                    ctx, send, 504, f"not answered within {self.timeout_s} s (NNSERVE_REQUEST_TIMEOUT_S)"
                )
        except ServiceError as e:
            if not ctx.status:
                await respond_json(ctx, send, e.status, e.body())
        except ClientDisconnected:
            log.info(
                "client gone before its request was read: %s %s (not answered)", ctx.method, received_value(ctx.path)
            )
            count_disconnect(ctx.route)
            ctx.model = None
        except Exception:
            log.exception("%s %s failed (request id %s)", ctx.method, received_value(ctx.path), ctx.request_hex)
            if not ctx.status:
                await respond_error(
                    ctx, send, 500, f"internal error (request id {ctx.request_hex}); see the server log"
                )
        finally:
            self.deadlines.leave(deadline)

    async def unrouted(self, ctx: Context, send: Send, api: str, allowed: tuple[str, ...]) -> None:
        """A path no route takes (404), or a method its routes do not (405, with Allow), in each API's words."""
        if allowed:
            message = "Method Not Allowed" if api == "v2" else "method not allowed"
            await respond_error(ctx, send, 405, message, [(b"allow", ", ".join(allowed).encode())])
        else:
            await respond_error(ctx, send, 404, "Not Found" if api == "v2" else f"no route {received_value(ctx.path)}")

    async def refuse_while_draining(self, ctx: Context, receive: Receive, send: Send) -> None:
        """503 on a connection that then closes. An upload under way is read first (within the body
        limit): answering before it has arrived would reset the client's connection mid-upload."""
        try:
            await read_body(ctx, receive, self.max_body, decode=False)
        except ClientDisconnected:
            return
        except PayloadTooLarge:
            pass  # past the limit: the connection closes anyway
        headers = [(b"retry-after", b"1"), (b"connection", b"close")]
        await respond_error(ctx, send, 503, "shutting down: retry on a new connection", headers)

    async def below(self, ctx: Context, scope: Scope, receive: Receive, send: Send) -> None:
        """BentoML's own app: its routes (/metrics filtered, service/telemetry.py), its plain-text errors
        as our JSON, the request id and what was answered noted on the way out."""
        worker = self.worker()
        filtered = ctx.path == "/metrics" and worker is not None
        start: Message = {}
        chunks: list[bytes] = []

        async def sent(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = {**message, "headers": [*message.get("headers", []), (REQUEST_ID, ctx.request_hex.encode())]}
                ctx.status = message["status"]
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if not ((message["status"] >= 400 and content_type.startswith(b"text/plain")) or filtered):
                    await send(start)
                    start = {}
                return
            if message["type"] == "http.response.body" and start:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self.rewritten(ctx, send, start, b"".join(chunks), worker if filtered else None)
                return
            await send(message)

        await self.app(scope, receive, sent)

    async def rewritten(self, ctx: Context, send: Send, start: Message, body: bytes, worker: Any) -> None:
        kept = [(k, v) for k, v in start["headers"] if k.lower() not in (b"content-length", b"content-type")]
        if worker is not None and start["status"] == 200:  # /metrics, less the series of versions gone
            table = worker.registry.table
            versions = {(n, v) for n, s in table.models.items() for v in s.versions} | set(table.refused)
            body = current_series(body, {n for n, _ in versions}, versions)
            media = dict(start["headers"]).get(b"content-type", b"text/plain")
            await respond(ctx, send, 200, body, [(k, v) for k, v in kept if k != REQUEST_ID], media_type=media)
            return
        text = body.decode("utf-8", "replace").strip()  # BentoML's and Starlette's plain-text error
        await respond_json(ctx, send, start["status"], {"error": text or "error", "detail": []},
                           [(k, v) for k, v in kept if k != REQUEST_ID])  # fmt: skip

    # --- the pages answered here -------------------------------------------------------------------
    async def readyz(self, ctx: Context, send: Send) -> None:
        worker = self.worker()
        health = worker.health() if worker is not None else {"ready": False, "error": "starting"}
        await respond_json(ctx, send, 200 if health["ready"] else 503, health)

    async def openapi(self, ctx: Context, send: Send) -> None:
        await self._document(ctx, send, 0)

    async def client_schema(self, ctx: Context, send: Send) -> None:
        await self._document(ctx, send, 1)

    async def _document(self, ctx: Context, send: Send, which: int) -> None:
        worker = self.worker()
        if worker is None:
            await respond_error(ctx, send, 503, "starting: the document is built once the models are loaded")
            return
        await respond(ctx, send, 200, worker.documents()[which])

    async def docs(self, ctx: Context, send: Send) -> None:
        await respond(ctx, send, 200, DOCS_PAGE, media_type=b"text/html; charset=utf-8")

    async def no_page(self, ctx: Context, send: Send) -> None:
        await respond_error(
            ctx, send, 404, "no page here: the API pages are off (NNSERVE_DOCS_UI=false); see /docs.json"
        )
