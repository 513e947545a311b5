"""Admission control: a bounded number of prediction requests in flight per worker, a bounded queue
behind them, and 503 with Retry-After at once beyond that, instead of latency that grows without limit.

The edge (service/protocol/edge.py) applies it to the prediction routes only (those the router marks:
/v1/<model>/<action> and /v2/.../infer): probes, metadata and /metrics must keep answering under
overload. A request that times out (504) is cancelled, which releases its slot.
"""

from __future__ import annotations

import asyncio


class Admission:
    def __init__(self, max_in_flight: int, max_queue: int) -> None:
        self.max_in_flight = max_in_flight  # 0: no limit
        self.max_queue = max_queue
        self.in_flight = 0
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None  # made in the worker's event loop, on first use

    def full(self) -> bool:
        return 0 < self.max_in_flight <= self.in_flight and self.waiting >= self.max_queue

    async def acquire(self) -> None:
        """Waits for a slot (the caller checked `full()` first)."""
        if self.max_in_flight <= 0:
            self.in_flight += 1
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        if self._slots is not None:
            self._slots.release()

    def refusal(self) -> str:
        return (
            f"overloaded: {self.in_flight} requests in flight and {self.waiting} queued in this worker; "
            "retry after the Retry-After seconds"
        )
