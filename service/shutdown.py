"""Graceful shutdown: on SIGTERM a worker stops being ready, refuses new predictions, lets the ones in
flight finish, and only then hands over to uvicorn's own shutdown.

Without this, uvicorn stops accepting at once on SIGTERM while BentoML's arbiter keeps the listening
socket open: probes and new requests hang in the backlog until the process is gone (measured: /readyz
and predictions timed out for 14 s), so a load balancer learns nothing and clients wait. Like
Triton's shutdown: readiness turns false at once, new inference requests get 503 with Retry-After and
`Connection: close` (a client's retry opens a new connection, to another replica behind a balancer;
the edge reads an upload that is under way first, so its client gets the 503 rather than a reset),
requests in flight complete, and after NNSERVE_SHUTDOWN_GRACE_S the worker exits whatever is left:
uvicorn is told to stop waiting for open connections, so the setting holds. Probes, metadata and
/metrics keep answering while draining. A second SIGTERM skips the wait. The edge (service/protocol/edge.py)
counts the predictions in flight and answers /readyz from this state.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class Drain:
    """This worker's shutdown state: whether it is draining, and how many predictions are in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._task: asyncio.Task | None = None
        self.closers: list[Callable[[], Awaitable[None]]] = []  # what stops before uvicorn does (the gRPC server)

    def on_exit(self, close: Callable[[], Awaitable[None]]) -> None:
        self.closers.append(close)

    async def close(self) -> None:
        """Runs each closer once: at the drain, or at the app's shutdown when there was no SIGTERM."""
        closers, self.closers = self.closers, []
        for close in closers:
            try:
                await close()
            except Exception:  # the exit goes on
                log.exception("stopping at shutdown failed")

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
        await self.close()
        if self.in_flight:
            log.warning("grace period of %g s over with %d predictions in flight: exiting", grace_s, self.in_flight)
            uvicorn_exit(sig, frame)
            server = getattr(uvicorn_exit, "__self__", None)  # uvicorn's Server.handle_exit, bound
            if server is not None:
                server.force_exit = True  # else uvicorn waits for those connections, however long they take
        else:
            log.info("drained: no prediction in flight, exiting")
            uvicorn_exit(sig, frame)


drain = Drain()  # one per worker process
