"""Two changes to BentoML 1.4.40, applied when the service is imported, and what the edge takes from
BentoML's configuration.

1. BentoML's request layers give way to the edge (service/protocol/edge.py) when no tracing exporter
is configured. BentoML wraps every request in six middlewares (OpenTelemetry, request metrics, the
access log, the request timeout, its service context; Starlette's error handling around them): a /v1
request crossed ten ASGI layers and seven `send` wrappers before a model. Without an exporter the
OpenTelemetry middleware records nothing, yet cost ~18% of a worker's CPU on one-row requests (py-spy,
loadtests/RESULTS.md); its access log a fifth of the throughput; its request metrics 15%
(docs/decisions.md). The edge does what they did (a request id, the same access log line, the same
request series, the timeout's 504), once, so with this patch a /v1 request crosses Starlette's error
handling and the edge, and one `send` wrapper (Starlette's, to answer 500 if nothing was sent).
Configure a tracing exporter (BentoML's `tracing` settings) and BentoML's middlewares are all back:
their lines and spans then carry trace ids, and the edge leaves the log and the series to them (`observe` is None).

2. A fix for its TimeoutMiddleware, for when it is back (tracing). The original schedules
`loop.call_later(timeout, ...)` for every request and never cancels it: with the 60 s default, tens of
thousands of timer handles and futures stay alive under load, the heap grows, and each full garbage
collection freezes the event loop longer (PERFORMANCE.md: p99 209 ms). It also waits the whole
timeout when the app fails before answering. The replacement cancels the timer when the request ends
and stops waiting when the app finishes, answering 504 on a timeout as before.

Each replaces only the exact code it was written against: another BentoML version, or a changed
method, stops start-up with a message instead of being patched blindly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import bentoml
from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from service.pinned import source_sha256
from service.protocol.access_log import AccessLog
from service.protocol.http_metrics import HttpMetrics
from service.protocol.observe import Observe

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


def _check(what: str, version: str, original: Any, sha256: str) -> None:
    if version != PATCHED_VERSION or source_sha256(original) != sha256:
        raise BentoMLChanged(
            f"service/glue/patches.py changes {what} of BentoML {PATCHED_VERSION}; found BentoML {version} "
            "with different code: check whether the patch is still needed there, then update or drop it"
        )


def patch_timeout_middleware(version: str = bentoml.__version__, original: Any = ORIGINAL_CALL) -> None:
    _check("TimeoutMiddleware (its timer leak)", version, original, PATCHED_SOURCE_SHA256)
    TimeoutMiddleware.__call__ = _call  # type: ignore[method-assign]


def tracing_configured() -> bool:
    return BentoMLContainer.tracing.exporter_type.get() is not None


def own_middlewares(middlewares: list[Middleware], service: Any) -> list[Middleware]:
    """BentoML's middlewares without its request layers (the module's docstring, 1): the service's own
    (the edge) and, when configured, CORS."""
    if tracing_configured():
        return middlewares
    own = {cls for cls, _ in service.middlewares} | {CORSMiddleware}
    return [m for m in middlewares if m.cls in own]


def _middlewares(self: ServiceAppFactory) -> list[Middleware]:
    return own_middlewares(ORIGINAL_MIDDLEWARES.fget(self), self.service)


def patch_middlewares(version: str = bentoml.__version__, original: Any = ORIGINAL_MIDDLEWARES.fget) -> None:
    _check("the middlewares of ServiceAppFactory", version, original, MIDDLEWARES_SOURCE_SHA256)
    ServiceAppFactory.middlewares = property(_middlewares)  # type: ignore[method-assign]


def observe() -> Observe | None:
    """The edge's access log and request series, as BentoML's configuration asks for them; None when
    BentoML's own layers write them (tracing)."""
    if tracing_configured():
        return None
    config = BentoMLContainer.api_server_config
    access, metrics_config = config.logging.access.get(), config.metrics.get()
    skip = [*access.get("skip_paths", []), "/livez", "/readyz", "/grpc.health.v1.Health/"]  # its config's, probes
    metrics = HttpMetrics(metrics_config["namespace"], skip) if metrics_config["enabled"] else None
    log = None
    if access["enabled"]:
        log = AccessLog((access["request_content_type"], access["request_content_length"]),
                        (access["response_content_type"], access["response_content_length"]), skip)  # fmt: skip
    return Observe(metrics, log)
