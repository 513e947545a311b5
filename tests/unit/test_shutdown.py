"""Graceful shutdown's parts: the drain's wait, its grace period (which also stops uvicorn waiting for
open connections), and a second SIGTERM. The refusal while draining is the edge's
(tests/unit/test_edge.py); tests/integration/test_faults.py runs the whole of it against a real server."""

from __future__ import annotations

import asyncio
import signal

from service.shutdown import Drain


def _drain_with(
    state: Drain, grace_s: float, finish_after_s: float | None, signals: int = 1
) -> tuple[list[tuple[int, int]], bool]:
    """Installs the drain in front of a stand-in for uvicorn's server, sends SIGTERM to this process,
    and returns what the stand-in got, (signal, predictions still in flight at the hand-over), and
    whether it was then told to stop waiting for open connections (force_exit)."""
    exits: list[tuple[int, int]] = []
    forced = []
    previous = signal.getsignal(signal.SIGTERM)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        handed_over = asyncio.Event()

        class Uvicorn:  # uvicorn's Server: its handle_exit is what the drain hands over to
            force_exit = False

            def handle_exit(self, sig, frame):
                exits.append((sig, state.in_flight))
                handed_over.set()

        uvicorn = Uvicorn()
        signal.signal(signal.SIGTERM, uvicorn.handle_exit)
        state.install(grace_s)
        state.in_flight = 1
        if finish_after_s is not None:
            loop.call_later(finish_after_s, lambda: setattr(state, "in_flight", 0))
        for _ in range(signals):
            signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(handed_over.wait(), timeout=10)
        forced.append(uvicorn.force_exit)

    try:
        asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGTERM, previous)
    return exits, forced[0]


def test_sigterm_waits_for_the_requests_in_flight_then_hands_over_to_uvicorn():
    state = Drain()
    exits, forced = _drain_with(state, grace_s=30, finish_after_s=0.3)
    assert exits == [(signal.SIGTERM, 0)] and state.draining  # handed over once the last request finished
    assert not forced  # nothing left to cut short


def test_the_grace_period_ends_the_wait_even_with_requests_in_flight():
    state = Drain()
    exits, forced = _drain_with(state, grace_s=0.2, finish_after_s=None)
    assert exits == [(signal.SIGTERM, 1)]
    assert forced  # and uvicorn does not then wait for that request's connection: the setting holds


def test_a_second_sigterm_stops_waiting():
    state = Drain()
    exits, _ = _drain_with(state, grace_s=600, finish_after_s=None, signals=2)
    assert exits[0] == (signal.SIGTERM, 1)  # handed over with the request still in flight
