"""The gRPC edge: what every call meets, as every HTTP request meets service/protocol/edge.py, and with the
same parts (the API keys, this worker's admission and drain, the request timeout, the request series and
access log, one error handler):

1. a request id and its Context, the route being the method's path (/inference.GRPCInferenceService/ModelInfer);
2. API keys from the metadata (`authorization: Bearer <key>` or `x-api-key`): UNAUTHENTICATED, or
   INVALID_ARGUMENT for two credentials; paths in NNSERVE_AUTH_EXEMPT_PATHS pass (the health methods);
3. a prediction (ModelInfer) is refused UNAVAILABLE while the worker drains, RESOURCE_EXHAUSTED beyond
   admission, and counted in flight otherwise (the HTTP predictions and these share one count and limit);
4. every call answers within NNSERVE_REQUEST_TIMEOUT_S (DEADLINE_EXCEEDED), or the client's own deadline;
5. errors: a ServiceError's HTTP status becomes its gRPC code (a client mistake is INVALID_ARGUMENT or
   NOT_FOUND naming the input, never UNKNOWN or INTERNAL); anything else is logged with the request id and
   answered INTERNAL without internals; a call the client cancelled is not answered, as over HTTP.

The request series and the access log label a call by its method's path; their status is the HTTP status
the same answer would have had (dashboards and alerts read both protocols alike), the log line adds the code.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.errors import ServiceError
from service.protocol.admission import Admission
from service.protocol.auth import ApiKeyAuth
from service.protocol.context import Context
from service.protocol.deadlines import Deadlines
from service.protocol.observe import Observe
from service.shutdown import drain
from service.telemetry import count_in_flight

log = logging.getLogger(__name__)
Code = grpc.StatusCode
# The code for each status a ServiceError carries; any other 4xx is a client mistake too.
CODES = {400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED, 404: Code.NOT_FOUND,
         408: Code.DEADLINE_EXCEEDED, 409: Code.FAILED_PRECONDITION, 413: Code.INVALID_ARGUMENT,
         429: Code.RESOURCE_EXHAUSTED, 500: Code.INTERNAL, 501: Code.UNIMPLEMENTED, 503: Code.UNAVAILABLE,
         504: Code.DEADLINE_EXCEEDED}  # fmt: skip
STATUSES = {Code.OK: 200, Code.RESOURCE_EXHAUSTED: 503, Code.UNAVAILABLE: 503, Code.DEADLINE_EXCEEDED: 504,
            Code.INTERNAL: 500, Code.UNAUTHENTICATED: 401}  # fmt: skip


def code_of(status: int) -> grpc.StatusCode:
    return CODES.get(status) or (Code.INVALID_ARGUMENT if 400 <= status < 500 else Code.INTERNAL)


class Refused(Exception):
    """An answer with a code and no reply message."""

    def __init__(self, code: grpc.StatusCode, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


Handler = Callable[[Context, Any], Awaitable[Any]]


class Malformed:
    """A request whose bytes are not its message (server.py's reader)."""

    def __init__(self, message: str, error: str) -> None:
        self.message, self.error = message, error


class RpcEdge:
    def __init__(self, auth: ApiKeyAuth, admission: Admission, timeout_s: float, plane: Any,
                 observe: Observe | None) -> None:  # fmt: skip
        self.auth, self.admission, self.plane, self.observe = auth, admission, plane, observe
        self.timeout_s = timeout_s
        self.deadlines = Deadlines(timeout_s)

    async def call(self, context: grpc.aio.ServicerContext, path: str, handler: Handler, request: Any,
                   prediction: bool = False) -> Any:  # fmt: skip
        """The handler's reply to `request`, or the call aborted with the code its failure maps to."""
        headers = [(k.encode(), v.encode()) for k, v in context.invocation_metadata() or () if isinstance(v, str)]
        ctx = Context(random.getrandbits(64), "POST", path, headers, time.perf_counter())
        ctx.route, ctx.prediction = path, prediction
        observe = self.observe
        if observe is not None:
            observe.begin(ctx)
        refused: Refused | None = None
        try:
            try:
                reply = await self.answer(ctx, handler, request)
                ctx.status, ctx.grpc_status = 200, "OK"
            except Refused as e:
                refused, reply = e, None
                ctx.status, ctx.grpc_status = e.status, e.code.name
        finally:
            if observe is not None:
                observe.end(ctx, {"client": _peer(context.peer()), "scheme": "grpc"})
        if refused is not None:
            context.set_trailing_metadata((("x-request-id", ctx.request_hex),))
            await context.abort(refused.code, refused.message)
        return reply

    async def answer(self, ctx: Context, handler: Handler, request: Any) -> Any:
        denied = self.auth.refusal(ctx.path, ctx.headers)
        if denied is None and isinstance(request, Malformed):
            raise Refused(
                Code.INVALID_ARGUMENT, f"the request is not a {request.message} message: {request.error}", 400
            )
        if denied is not None:
            status, message = denied
            raise Refused(code_of(status), message.replace("Authorization: Bearer", "metadata authorization: Bearer")
                          .replace("X-API-Key:", "x-api-key:"), status)  # fmt: skip
        if not ctx.prediction:
            return await self.guarded(ctx, handler, request)
        if drain.draining:
            raise Refused(Code.UNAVAILABLE, "shutting down: retry on a new connection", 503)
        if self.admission.full():
            raise Refused(Code.RESOURCE_EXHAUSTED, self.admission.refusal(), 503)
        if not self.admission.take():
            await self.admission.acquire()
        drain.in_flight += 1
        count_in_flight(1)
        try:
            return await self.guarded(ctx, handler, request)
        finally:
            drain.in_flight -= 1
            count_in_flight(-1)
            self.admission.release()
            if ctx.model is not None:  # a version took it
                self.plane.count(ctx.model, ctx.version, ctx.status or 200, time.perf_counter() - ctx.start)

    async def guarded(self, ctx: Context, handler: Handler, request: Any) -> Any:
        deadline = self.deadlines.enter()
        try:
            return await handler(ctx, request)
        except asyncio.CancelledError:
            if not deadline.timed_out():
                ctx.model = None  # the client cancelled, or its deadline passed: not answered
                raise
            ctx.status = 504
            raise Refused(Code.DEADLINE_EXCEEDED, f"not answered within {self.timeout_s} s "
                                                  "(NNSERVE_REQUEST_TIMEOUT_S)", 504) from None  # fmt: skip
        except Refused as e:
            ctx.status = e.status
            raise
        except ServiceError as e:
            ctx.status = e.status
            raise Refused(code_of(e.status), e.message, e.status) from None
        except Exception:
            log.exception("gRPC %s failed (request id %s)", ctx.path, ctx.request_hex)
            ctx.status = 500
            raise Refused(Code.INTERNAL, f"internal error (request id {ctx.request_hex}); see the server log",
                          500) from None  # fmt: skip
        finally:
            self.deadlines.leave(deadline)


def _peer(peer: str) -> tuple[str, int] | None:
    """gRPC's "ipv4:127.0.0.1:5000" / "ipv6:[::1]:5000" as the (host, port) an ASGI scope has."""
    host, _, port = peer.partition(":")[2].rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None
