"""Admission control: a bounded number of prediction requests in flight per worker, a bounded queue
behind them, and 503 with Retry-After at once beyond that, instead of latency that grows without limit.

The edge (service/protocol/edge.py) applies it to the prediction routes only (those the router marks:
/v1/<model>/<action> and /v2/.../infer): probes, metadata and /metrics must keep answering under
overload. A request that times out (504) is cancelled, which releases its slot.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Admission:
    """The slots, counted (`in_flight`), and the requests waiting for one, first come first served. A free
    slot is taken without a wait (`take`): an asyncio.Semaphore cost five Python calls and a coroutine a
    request, under no contention at all."""

    def __init__(self, max_in_flight: int, max_queue: int) -> None:
        self.max_in_flight = max_in_flight  # 0: no limit
        self.max_queue = max_queue
        self.in_flight = 0
        self.waiting = 0
        self.queue: deque[asyncio.Future[None]] = deque()  # the waiting requests' slots, handed over by release()

    def full(self) -> bool:
        return 0 < self.max_in_flight <= self.in_flight and self.waiting >= self.max_queue

    def take(self) -> bool:
        """A slot now, when one is free; else False (then `acquire`). A slot is never free while a request
        waits: release() hands it over."""
        if self.max_in_flight <= 0 or self.in_flight < self.max_in_flight:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Waits for a slot (the caller checked `full()`, then `take()`)."""
        slot = asyncio.get_running_loop().create_future()
        self.queue.append(slot)
        self.waiting += 1
        try:
            await slot  # release() counts the slot as ours when it hands it over
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():  # handed a slot, then cancelled before using it
                self.release()
            elif slot in self.queue:  # (release() may have passed it by already)
                self.queue.remove(slot)
            raise
        finally:
            self.waiting -= 1

    def release(self) -> None:
        """A slot given back: to the longest waiting request, if any."""
        self.in_flight -= 1
        while self.queue:
            slot = self.queue.popleft()
            if not slot.done():
                self.in_flight += 1
                slot.set_result(None)
                return

    def refusal(self) -> str:
        return (
            f"overloaded: {self.in_flight} requests in flight and {self.waiting} queued in this worker; "
            "retry after the Retry-After seconds"
        )
