"""Every request's deadline (NNSERVE_REQUEST_TIMEOUT_S), kept by one timer per worker.

`asyncio.timeout` arms a timer per request: under uvloop a libuv timer started and stopped, 4.8% of a
worker's CPU on one-row housing predictions (py-spy, 2 workers under wrk). Every request has the same
timeout, so deadlines fall in the order the requests came: they wait here in that order, and one timer,
set for the oldest, cancels what is overdue when it fires and is set again for the next. A request costs
a dictionary entry.

The cancellation is `asyncio.timeout`'s: the request's task is cancelled; `expired` tells the caller it
was the deadline, and `uncancel` leaves a cancellation from elsewhere (a shutdown) to go on.
"""

from __future__ import annotations

import asyncio


class Deadline:
    __slots__ = ("task", "when", "cancelling", "expired")

    def __init__(self, task: asyncio.Task, when: float) -> None:
        self.task, self.when = task, when
        self.cancelling = task.cancelling()  # cancellations already asked for: not ours
        self.expired = False

    def timed_out(self) -> bool:
        """After a CancelledError: True when the deadline cancelled the task (and nothing else did)."""
        return self.expired and self.task.uncancel() <= self.cancelling


class Deadlines:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.waiting: dict[Deadline, None] = {}  # in the order they fall
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None

    def enter(self) -> Deadline:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # (a test's second event loop: the first one's timer is gone with it)
            self.loop, self.waiting, self.timer = loop, {}, None
        deadline = Deadline(asyncio.current_task(loop), loop.time() + self.timeout_s)  # type: ignore[arg-type]
        self.waiting[deadline] = None
        if self.timer is None:
            self.timer = loop.call_at(deadline.when, self._fire)
        return deadline

    def leave(self, deadline: Deadline) -> None:
        self.waiting.pop(deadline, None)

    def _fire(self) -> None:
        self.timer = None
        assert self.loop is not None
        now = self.loop.time()
        while self.waiting:
            deadline = next(iter(self.waiting))
            if deadline.when > now:
                self.timer = self.loop.call_at(deadline.when, self._fire)
                return
            del self.waiting[deadline]
            deadline.expired = True
            deadline.task.cancel()
