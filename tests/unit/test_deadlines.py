"""Request deadlines under one timer (service/protocol/deadlines.py): an overdue request is cancelled and
told it timed out, in time order; one on time is not touched; a cancellation from elsewhere is not
taken for a timeout; each event loop gets its own timer."""

from __future__ import annotations

import asyncio

import pytest

from service.protocol.deadlines import Deadlines


async def guarded(deadlines: Deadlines, seconds: float) -> str:
    """What the edge does around a route's handling."""
    deadline = deadlines.enter()
    try:
        await asyncio.sleep(seconds)
        return "answered"
    except asyncio.CancelledError:
        if not deadline.timed_out():
            raise
        return "timed out"
    finally:
        deadlines.leave(deadline)


def test_overdue_requests_time_out_and_the_rest_answer():
    async def scenario():
        deadlines = Deadlines(0.2)
        results = await asyncio.gather(guarded(deadlines, 0.05), guarded(deadlines, 5), guarded(deadlines, 0.1),
                                       guarded(deadlines, 5))  # fmt: skip
        # "timed out" from a 5 s sleep: the deadline cancelled it before the sleep could end (no clock read)
        assert results == ["answered", "timed out", "answered", "timed out"]
        assert not deadlines.waiting and deadlines.timer is None  # nothing left: no timer armed

    asyncio.run(scenario())


def test_a_request_entering_later_gets_its_own_full_timeout():
    async def scenario():
        deadlines = Deadlines(0.3)
        first = asyncio.create_task(guarded(deadlines, 0.01))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(guarded(deadlines, 0.25))  # due at 0.5 s: the timer set for 0.3 s re-arms
        assert await first == "answered" and await second == "answered"

    asyncio.run(scenario())


def test_a_cancellation_from_elsewhere_is_not_a_timeout():
    async def scenario():
        deadlines = Deadlines(5)
        task = asyncio.create_task(guarded(deadlines, 5))
        await asyncio.sleep(0.01)
        task.cancel()  # a shutdown, say
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines.waiting

    asyncio.run(scenario())


def test_each_event_loop_gets_its_own_timer():
    deadlines = Deadlines(0.1)
    for _ in range(2):  # the first loop's timer went with it: the second must still time out
        assert asyncio.run(guarded(deadlines, 5)) == "timed out"
