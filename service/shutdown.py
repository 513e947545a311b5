"""Graceful shutdown: on SIGTERM a worker stops being ready, refuses new predictions, lets the ones in
flight finish, and only then hands over to uvicorn's own shutdown.

Without this, uvicorn stops accepting at once on SIGTERM while BentoML's arbiter keeps the listening
socket open: probes and new requests hang in the backlog until the process is gone (measured: /readyz
and predictions timed out for 14 s), so a load balancer learns nothing and clients wait. Like
Triton's shutdown: readiness turns false at once, new inference requests get 503 with Retry-After and
`Connection: close` (a client's retry opens a new connection, to another replica behind a balancer),
requests in flight complete, and after NNSERVE_SHUTDOWN_GRACE_S the worker exits whatever is left.
Probes, metadata and /metrics keep answering while draining. A second SIGTERM skips the wait.
/readyz is answered here too, with the details of the worker's health rather than BentoML's ".".
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.admission import is_prediction
from service.middleware import send_json

log = logging.getLogger(__name__)


class Drain:
    """This worker's shutdown state: whether it is draining, and how many predictions are in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._task: asyncio.Task | None = None

    def install(self, grace_s: float) -> None:
        """Puts our SIGTERM handler in front of uvicorn's. Call it in the worker's event loop, after
        uvicorn has installed its handlers (BentoML creates the service instance then)."""
        uvicorn_exit = signal.getsignal(signal.SIGTERM)
        if not callable(uvicorn_exit):
            log.warning("no SIGTERM handler to drain in front of (%r): graceful drain off", uvicorn_exit)
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(sig: int, frame: Any) -> None:
            if self.draining:  # a second SIGTERM: stop waiting
                uvicorn_exit(sig, frame)
                return
            self.draining = True
            loop.call_soon_threadsafe(self._start, uvicorn_exit, sig, frame, grace_s)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _start(self, uvicorn_exit: Any, sig: int, frame: Any, grace_s: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(uvicorn_exit, sig, frame, grace_s))

    async def _drain(self, uvicorn_exit: Any, sig: int, frame: Any, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        log.info("SIGTERM: draining (not ready, new predictions refused), %d in flight", self.in_flight)
        deadline = loop.time() + grace_s
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)  # polling a counter, bounded by the grace period
        if self.in_flight:
            log.warning("grace period of %g s over with %d predictions in flight: exiting", grace_s, self.in_flight)
        else:
            log.info("drained: no prediction in flight, exiting")
        uvicorn_exit(sig, frame)


drain = Drain()  # one per worker process


class ReadinessGate:
    """Answers GET /readyz with this worker's health (models, the provider each bound, errors, whether
    it is draining), 200 or 503; counts the prediction requests in flight, and while draining answers
    new ones 503 at once."""

    def __init__(self, app: ASGIApp, health: Callable[[], dict[str, Any]], state: Drain = drain) -> None:
        self.app = app
        self.health = health
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == "/readyz" and scope["method"] in ("GET", "HEAD"):
            health = self.health()
            await send_json(send, 200 if health["ready"] else 503, health)
        elif not is_prediction(scope["path"]):
            await self.app(scope, receive, send)
        elif self.state.draining:
            headers = [(b"retry-after", b"1"), (b"connection", b"close")]
            await send_json(send, 503, {"error": "shutting down: retry on a new connection", "detail": []},
                            {"headers": headers})  # fmt: skip
        else:
            self.state.in_flight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.state.in_flight -= 1
