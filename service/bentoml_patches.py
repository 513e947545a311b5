"""A fix for BentoML 1.4.40's TimeoutMiddleware, applied when the service is imported.

The original schedules `loop.call_later(timeout, ...)` for every request and never cancels it: with
the 60 s default, tens of thousands of timer handles and futures stay alive under load, the heap
grows, and each full garbage collection freezes the event loop longer (PERFORMANCE.md: p99 209 ms).
It also waits the whole timeout when the app fails before answering. The replacement cancels the
timer when the request ends and stops waiting when the app finishes, answering 504 on a timeout as
before. It replaces only the exact code it was written against: another BentoML version, or a changed
method, stops start-up with a message instead of being patched blindly.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any

import bentoml
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse

PATCHED_VERSION = "1.4.40"
PATCHED_SOURCE_SHA256 = "fd8b9e3da28ed2b44cfd508d641617e049fcd4986138197ce7bb227332505896"
ORIGINAL_CALL = TimeoutMiddleware.__call__


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


def patch_timeout_middleware(version: str = bentoml.__version__, original: Any = ORIGINAL_CALL) -> None:
    if version != PATCHED_VERSION or source_sha256(original) != PATCHED_SOURCE_SHA256:
        raise BentoMLChanged(
            f"service/bentoml_patches.py fixes TimeoutMiddleware of BentoML {PATCHED_VERSION}; found BentoML "
            f"{version} with different code: check whether the timer leak is fixed there, then update or drop the patch"
        )
    TimeoutMiddleware.__call__ = _call  # type: ignore[method-assign]
