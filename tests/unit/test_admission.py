"""Admission's slots (service/protocol/admission.py): taken at once when free, else waited for in the order
asked, and never lost to a request cancelled while it waits."""

from __future__ import annotations

import asyncio

import pytest

from service.protocol.admission import Admission


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_slots_go_to_the_waiting_requests_in_the_order_they_came():
    async def scenario() -> list[str]:
        admission, order = Admission(1, 10), []
        assert admission.take()

        async def wait(name: str) -> None:
            await admission.acquire()
            order.append(name)

        waiting = [asyncio.create_task(wait(name)) for name in "BCD"]
        await _turns()
        assert admission.waiting == 3 and not admission.take()
        for _ in range(3):
            admission.release()
            await _turns()
        await asyncio.gather(*waiting)
        admission.release()
        assert admission.in_flight == 0 and admission.waiting == 0 and not admission.queue
        return order

    assert asyncio.run(scenario()) == ["B", "C", "D"]


@pytest.mark.parametrize("handed", [False, True], ids=["cancelled-waiting", "cancelled-once-handed-a-slot"])
def test_a_request_cancelled_while_it_waits_loses_no_slot(handed):
    """Cancelled in the same turn as the slot is freed (before or after release() hands it over), the slot
    is free again for the next request, which takes it at once."""

    async def scenario() -> tuple[bool, int, int, bool, int]:
        admission = Admission(1, 10)
        assert admission.take()
        waiter = asyncio.create_task(admission.acquire())
        await _turns()
        if handed:
            admission.release()  # handed to the waiter, which has not run yet
            waiter.cancel()
        else:
            waiter.cancel()
            admission.release()  # passes the cancelled waiter by
        at_once = admission.take()  # in the same turn: free unless the cancelled waiter still holds it
        (outcome,) = await asyncio.gather(waiter, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError), outcome  # cancelled, nothing else went wrong
        taken = at_once or admission.take()
        return at_once, admission.in_flight, admission.waiting, taken, len(admission.queue)

    assert asyncio.run(scenario()) == (not handed, 1, 0, True, 0)


def test_without_a_limit_every_request_takes_a_slot():
    admission = Admission(0, 0)
    assert all(admission.take() for _ in range(1000)) and admission.in_flight == 1000 and not admission.full()
