"""Three changes to BentoML 1.4.40, applied when the service is imported.

1. A fix for its TimeoutMiddleware.

The original schedules `loop.call_later(timeout, ...)` for every request and never cancels it: with
the 60 s default, tens of thousands of timer handles and futures stay alive under load, the heap
grows, and each full garbage collection freezes the event loop longer (PERFORMANCE.md: p99 209 ms).
It also waits the whole timeout when the app fails before answering. The replacement cancels the
timer when the request ends and stops waiting when the app finishes, answering 504 on a timeout as
before.

2. No OpenTelemetry middleware when no tracing exporter is configured. BentoML installs it on every
service; without an exporter it records nothing, yet it cost ~18% of a worker's CPU on one-row
requests (py-spy, loadtests/RESULTS.md). In its place a pass-through gives each request what the
rest of BentoML takes from it: a request id (the X-BentoML-Request-ID header). Log lines then carry
no trace id, and BentoML's access log middleware gives way to ours (service/protocol/access_log.py: the same
line, a fifth of the one-row throughput less). Configure a tracing exporter (BentoML's `tracing`
settings) and both of BentoML's middlewares are back.

3. BentoML's request metrics middleware gives way to a subclass that writes the same series with the
same values and looks each series up once (service/protocol/http_metrics.py).

Each replaces only the exact code it was written against: another BentoML version, or a changed
method, stops start-up with a message instead of being patched blindly.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
from typing import Any

import bentoml
from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.context import trace_context
from bentoml._internal.server.http.access import AccessLogMiddleware
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.protocol.access_log import AccessLog
from service.protocol.http_metrics import RequestMetrics

PATCHED_VERSION = "1.4.40"
PATCHED_SOURCE_SHA256 = "fd8b9e3da28ed2b44cfd508d641617e049fcd4986138197ce7bb227332505896"
ORIGINAL_CALL = TimeoutMiddleware.__call__
MIDDLEWARES_SOURCE_SHA256 = "bce0377ff45b69beb184cb7c8817d7eca51873ed1e2394c732ae58da296c8d31"
ORIGINAL_MIDDLEWARES = ServiceAppFactory.middlewares


class BentoMLChanged(RuntimeError):
    """The BentoML code a patch replaces is not the code it was written for."""


async def _call(self: TimeoutMiddleware, scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send))
    fut.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))  # failed before answering
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            error = {"error": f"not answered within {self.timeout} s (NNSERVE_REQUEST_TIMEOUT_S)", "detail": []}
            await JSONResponse(error, status_code=504)(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


def source_sha256(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def _check(what: str, version: str, original: Any, sha256: str) -> None:
    if version != PATCHED_VERSION or source_sha256(original) != sha256:
        raise BentoMLChanged(
            f"service/glue/patches.py changes {what} of BentoML {PATCHED_VERSION}; found BentoML {version} "
            "with different code: check whether the patch is still needed there, then update or drop it"
        )


def patch_timeout_middleware(version: str = bentoml.__version__, original: Any = ORIGINAL_CALL) -> None:
    _check("TimeoutMiddleware (its timer leak)", version, original, PATCHED_SOURCE_SHA256)
    TimeoutMiddleware.__call__ = _call  # type: ignore[method-assign]


class RequestId:
    """Stands in for OpenTelemetry's middleware when nothing is traced: a request id, nothing else."""

    def __init__(self, app: ASGIApp, **_: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            trace_context.request_id = random.getrandbits(64)
        await self.app(scope, receive, send)


def tracing_configured() -> bool:
    return BentoMLContainer.tracing.exporter_type.get() is not None


def lighter_middlewares(middlewares: list[Middleware]) -> list[Middleware]:
    """BentoML's middlewares, some swapped for ones that do the same for less (the module's docstring)."""
    swaps: dict[type, type] = {RunnerTrafficMetricsMiddleware: RequestMetrics}
    if not tracing_configured():
        swaps |= {OpenTelemetryMiddleware: RequestId, AccessLogMiddleware: AccessLog}
    return [Middleware(swaps[m.cls], *m.args, **m.kwargs) if m.cls in swaps else m for m in middlewares]


def _middlewares(self: ServiceAppFactory) -> list[Middleware]:
    return lighter_middlewares(ORIGINAL_MIDDLEWARES.fget(self))


# What the lighter middlewares copy (access log) or build on (request metrics), as it was written for.
REPLACED_SOURCES_SHA256 = {
    AccessLogMiddleware.__call__: "ca056cf1b06859a9b70f632521b388264edd4f40b187d6255b16e18c7e1189b6",
    RunnerTrafficMetricsMiddleware.__call__: "b7dc25ae0208d7b27864271735f917f20fe7712a3d76e9afefca4271f5b458d9",
    RunnerTrafficMetricsMiddleware._setup: "2aaf597231c95f1be2cf74473c63df342ba72f2e4f50953675cff464a6679b00",
}


def patch_middlewares(version: str = bentoml.__version__, original: Any = ORIGINAL_MIDDLEWARES.fget) -> None:
    _check("the middlewares of ServiceAppFactory (tracing)", version, original, MIDDLEWARES_SOURCE_SHA256)
    for replaced, sha256 in REPLACED_SOURCES_SHA256.items():
        _check(replaced.__qualname__, version, replaced, sha256)
    ServiceAppFactory.middlewares = property(_middlewares)  # type: ignore[method-assign]
