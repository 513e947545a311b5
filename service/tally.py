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
import logging
import struct
import time
from asyncio import get_running_loop
from bisect import bisect_left
from typing import Any

from service.pinned import source_sha256

log = logging.getLogger(__name__)


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
        mmap = MMAP.get()  # None: each write goes through prometheus_client
        writes: list[tuple[Any, float]] = []  # (a multiprocess value, what to add to it), for MmapWrites
        sets: list[Any] = []  # multiprocess values to set to the time, for MmapWrites
        for child, amount in adds.items():
            if not amount:  # an in-flight gauge that went up and down again is left as it is
                continue
            if mmap is not None and mmap.owns(child, amount):
                writes.append((child._value, amount))
            else:
                child.inc(amount)
        for child, values in observed.items():
            observe_all(child, values, writes if mmap is not None and mmap.owns(child) else None)
        for child in stamped:
            if mmap is not None and mmap.owns(child):
                sets.append(child._value)
            else:
                child.set_to_current_time()
        if mmap is not None:
            mmap.write(writes, sets)


def observe_all(child: Any, values: list[float], writes: list[tuple[Any, float]] | None = None) -> None:
    """Observations of one histogram child: one write to its sum and one per bucket they fall in,
    where `observe` writes the sum and a bucket for each (into `writes`, when given, for MmapWrites). It
    reads prometheus_client's histogram internals (its bounds, buckets and sum, the same since 0.1);
    without them, one observe each (tests/unit/test_tally.py compares both ways' exposition)."""
    bounds, buckets, total = getattr(child, "_upper_bounds", None), getattr(child, "_buckets", None), getattr(
        child, "_sum", None)  # fmt: skip
    if (len(values) == 1 and writes is None) or bounds is None or buckets is None or total is None:
        for value in values:
            child.observe(value)
        return
    counts: dict[int, int] = {}  # bucket -> observations in it: the few hit, not every bucket looked at
    last = len(bounds)
    for value in values:
        i = bisect_left(bounds, value)  # the first bound at or above it, as `observe` looks for
        if i < last and value <= bounds[i]:  # (not NaN)
            counts[i] = counts.get(i, 0) + 1
    if writes is None:
        total.inc(sum(values))
        for i, count in counts.items():
            buckets[i].inc(count)
        return
    writes.append((total, sum(values)))
    for i, count in counts.items():
        writes.append((buckets[i], count))


class MmapWrites:
    """prometheus_client's multiprocess writes, a flush's at once. Each of its writes (MmapedValue.inc:
    a lock, a check for a fork, the sum, the packed value into the worker's memory-mapped file) cost
    9,100 instructions through Counter.inc, a fifth of what a one-row prediction spent beyond the model's
    run (make instructions). Here the same lock is taken once for the flush, the fork checked once, and
    each value written as MmapedValue.inc and .set write it: the same file, the same bytes. Used only
    where prometheus_client's code is the code this was written for (SOURCES_SHA256), else None: every
    write then goes through prometheus_client."""

    def __init__(self, value_class: type) -> None:
        self.value_class = value_class
        self.lock = _cells(value_class.inc)["lock"]
        check = _cells(value_class._MmapedValue__check_for_pid_change)  # type: ignore[attr-defined]
        self.pid, self.process_identifier = check["pid"], check["process_identifier"]

    def owns(self, child: Any, amount: float = 0.0) -> bool:
        """Whether a write to `child` (adding `amount`, or setting it, or observing) is made here: a counter's,
        gauge's or histogram's child with multiprocess values, not what prometheus_client refuses (a
        counter made smaller; a "mostrecent" gauge, written with its own time stamp)."""
        value = getattr(child, "_sum" if getattr(child, "_type", None) == "histogram" else "_value", None)
        if type(value) is not self.value_class or getattr(child, "_is_most_recent", False):
            return False
        return amount >= 0 or child._type == "gauge"

    def write(self, writes: list[tuple[Any, float]], sets: list[Any]) -> None:
        if not (writes or sets):
            return
        now = time.time()
        if self.pid["value"] != self.process_identifier():  # forked: prometheus_client resets its files first
            for value, amount in writes:
                value.inc(amount)
            for value in sets:
                value.set(now)
            return
        with self.lock:
            for value, amount in writes:  # MmapedValue.inc
                value._value += amount
                value._timestamp = 0.0
                _write(value)
            for value in sets:  # MmapedValue.set(now)
                value._value, value._timestamp = now, 0.0
                _write(value)


def _write(value: Any) -> None:
    """MmapedDict.write_value(key, value, timestamp): a key new to the file goes through it."""
    file = value._file
    position = file._positions.get(value._key)
    if position is None:
        file.write_value(value._key, value._value, value._timestamp)
    else:
        file._m[position : position + 16] = PACK_TWO_DOUBLES(value._value, value._timestamp)


def _cells(function: Any) -> dict[str, Any]:
    return dict(zip(function.__code__.co_freevars, (c.cell_contents for c in function.__closure__ or ()), strict=True))


PACK_TWO_DOUBLES = struct.Struct(b"dd").pack
SOURCES_SHA256 = {  # what MmapWrites does as prometheus_client does it, as it was when MmapWrites was written
    "MmapedValue.inc": "1a87cf0572b4f813be9c2bc9820264986c20c7ec597e5b2e761d71a71f5c31a7",
    "MmapedValue.set": "9204b9e8035bd3be889c531b9174b5dfbb638a7a86b49b6afb788384985db143",
    "MmapedValue.__check_for_pid_change": "10809598c417b31ab2e2aae6bb58632a6056d3a32970b3229025f13f7456c422",
    "MmapedDict.write_value": "edffcc45d7ea204672b4817b6c9859901b0f7666a86bb95e1b3faf299bfcaac8",
    "_pack_two_doubles": "f21dba215fa981a9f51102038fdc6f05e56f9ba9f28cff0bf3d55a15702855f7",
}


class _Mmap:
    """MmapWrites for this process, made at the first flush (prometheus_client chooses its value class when
    first imported, from PROMETHEUS_MULTIPROC_DIR), or None."""

    def __init__(self) -> None:
        self.made, self.writes = False, None

    def get(self) -> MmapWrites | None:
        if not self.made:
            self.made, self.writes = True, _mmap_writes()
        return self.writes


def _mmap_writes() -> MmapWrites | None:
    try:
        from prometheus_client import mmap_dict, values

        value_class = values.ValueClass
        if not getattr(value_class, "_multiprocess", False):
            return None
        pinned = {"MmapedValue.inc": value_class.inc, "MmapedValue.set": value_class.set,
                  "MmapedValue.__check_for_pid_change": value_class._MmapedValue__check_for_pid_change,
                  "MmapedDict.write_value": mmap_dict.MmapedDict.write_value,
                  "_pack_two_doubles": mmap_dict._pack_two_doubles}  # fmt: skip
        found = {name: source_sha256(function) for name, function in pinned.items()}
        if found != SOURCES_SHA256:
            log.warning("prometheus_client's multiprocess values are not the code service/tally.py was written "
                        "for: each metric write goes through prometheus_client (%s)", found)  # fmt: skip
            return None
        return MmapWrites(value_class)
    except Exception:  # noqa: BLE001 - a library's internals not as expected: the general way, never a failure
        log.warning("service/tally.py: prometheus_client's internals not as expected", exc_info=True)
        return None


MMAP = _Mmap()


TALLY = Tally()  # the worker's
