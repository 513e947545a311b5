"""The writes a request makes to its Prometheus series, gathered over a turn of the event loop and made
once, at the start of the next turn.

With several workers, each write to a series is a write to the worker's memory-mapped file under a
lock (prometheus_client's multiprocess mode): about 1.1 us. A one-row prediction made 13 of them (the
request series, in flight, the prediction's count and latency, the batch size), a fifth of what the
worker spent on it beyond the model. Under load a turn of the loop answers several requests: here their
counts are summed, an in-flight gauge that went up and down is not written at all, and observations of
a histogram become one write per bucket they fall in.

What a scrape reads is at most one turn behind: the turn that answered a request ends, the next begins
with these writes, before the worker reads another request (a /metrics scrape among them). Off the
event loop (start-up, a thread) a write is made at once. At exit what is left is written.
"""

from __future__ import annotations

import asyncio
import atexit
from asyncio import get_running_loop
from bisect import bisect_left
from typing import Any


class Tally:
    def __init__(self) -> None:
        self.adds: dict[Any, float] = {}  # a counter or gauge (a labelled child) -> what to add
        self.observed: dict[Any, list[float]] = {}  # a histogram's child -> its observations
        self.stamped: set[Any] = set()  # gauges set to the time of the flush (a last-request time)
        self.due_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on
        atexit.register(self.flush)

    # Each write asks for the running loop itself: a call to a shared helper cost a tenth of the tally.
    def add(self, child: Any, amount: float = 1.0) -> None:
        """`child.inc(amount)` (a counter's, or a gauge's: amount may then be negative)."""
        try:
            loop = get_running_loop()
        except RuntimeError:
            child.inc(amount)
            return
        if self.due_on is not loop:
            self._schedule(loop)
        self.adds[child] = self.adds.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        """`child.observe(value)`, for a histogram's child."""
        try:
            loop = get_running_loop()
        except RuntimeError:
            child.observe(value)
            return
        if self.due_on is not loop:
            self._schedule(loop)
        values = self.observed.get(child)
        if values is None:
            self.observed[child] = [value]
        else:
            values.append(value)

    def stamp(self, child: Any) -> None:
        """`child.set_to_current_time()`, for a gauge: set when the flush is made, a turn later at most."""
        try:
            loop = get_running_loop()
        except RuntimeError:
            child.set_to_current_time()
            return
        if self.due_on is not loop:
            self._schedule(loop)
        self.stamped.add(child)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """A flush at the loop's next turn (none is due on it yet)."""
        if self.due_on is not None:  # a loop that ended before its turn came (tests run several)
            self.flush()
        self.due_on = loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self.due_on = None
        adds, observed, stamped = self.adds, self.observed, self.stamped
        if not (adds or observed or stamped):
            return
        self.adds, self.observed, self.stamped = {}, {}, set()
        for child, amount in adds.items():
            if amount:  # an in-flight gauge that went up and down again is left as it is
                child.inc(amount)
        for child, values in observed.items():
            observe_all(child, values)
        for child in stamped:
            child.set_to_current_time()


def observe_all(child: Any, values: list[float]) -> None:
    """Observations of one histogram child: one write to its sum and one per bucket they fall in,
    where `observe` writes the sum and a bucket for each. It reads prometheus_client's histogram
    internals (its bounds, buckets and sum, the same since 0.1); without them, one observe each
    (tests/unit/test_tally.py compares both ways' exposition)."""
    bounds, buckets, total = (getattr(child, a, None) for a in ("_upper_bounds", "_buckets", "_sum"))
    if len(values) == 1 or bounds is None or buckets is None or total is None:
        for value in values:
            child.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        i = bisect_left(bounds, value)  # the first bound at or above it, as `observe` looks for
        if i < len(bounds) and value <= bounds[i]:  # (not NaN)
            counts[i] += 1
    total.inc(sum(values))
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)


TALLY = Tally()  # the worker's
