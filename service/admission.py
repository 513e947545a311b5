"""Admission control: a bounded number of requests in flight per worker, a bounded queue behind them,
and 503 with Retry-After at once beyond that, instead of latency that grows without limit.

Only the prediction routes (/v1/<model>/... and /v2/.../infer) are limited: probes, metadata and
/metrics must keep answering under overload. A request that times out (BentoML's timeout, 504) is
cancelled, which releases its slot.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from service.middleware import send_json


def is_prediction(path: str) -> bool:
    return (path.startswith("/v1/") and "/predict" in path) or (path.startswith("/v2/") and path.endswith("/infer"))


class AdmissionControl:
    def __init__(self, app: ASGIApp, max_in_flight: int, max_queue: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.retry_after = str(retry_after_s).encode()
        self.in_flight = 0
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None  # made in the worker's event loop, on first use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_in_flight <= 0 or not is_prediction(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        if self.in_flight >= self.max_in_flight and self.waiting >= self.max_queue:
            await self._overloaded(send)
            return
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self._slots.release()

    async def _overloaded(self, send: Send) -> None:
        error = (
            f"overloaded: {self.in_flight} requests in flight and {self.waiting} queued in this worker; "
            "retry after the Retry-After seconds"
        )
        await send_json(send, 503, {"error": error, "detail": []}, {"headers": [(b"retry-after", self.retry_after)]})
