"""Graceful shutdown's parts: the drain's wait and its grace period, the refusal while draining, and a
second SIGTERM. (tests/integration/test_faults.py runs the whole of it against a real server.)"""

from __future__ import annotations

import asyncio
import signal

from service.shutdown import Drain, ReadinessGate


async def _call(app, path: str) -> tuple[int, dict]:
    sent = []

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, None, send)
    return sent[0]["status"], dict(sent[0]["headers"])


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_while_draining_predictions_and_readyz_get_503_and_the_rest_is_served():
    async def scenario():
        state = Drain()
        app = ReadinessGate(_ok, lambda: {"ready": not state.draining}, state)
        assert (await _call(app, "/readyz"))[0] == 200
        assert (await _call(app, "/v1/housing-price/predict"))[0] == 200
        state.draining = True
        status, headers = await _call(app, "/v1/housing-price/predict")
        assert status == 503 and headers[b"connection"] == b"close" and headers[b"retry-after"] == b"1"
        assert (await _call(app, "/v2/models/ad-click/infer"))[0] == 503
        assert (await _call(app, "/readyz"))[0] == 503
        for path in ("/livez", "/metrics", "/v1/models"):
            assert (await _call(app, path))[0] == 200, path
        assert state.in_flight == 0

    asyncio.run(scenario())


def _drain_with(state: Drain, grace_s: float, finish_after_s: float | None, signals: int = 1) -> list[tuple[int, int]]:
    """Installs the drain in front of a stand-in for uvicorn's handler, sends SIGTERM to this process,
    and returns what the stand-in got: (signal, predictions still in flight at the hand-over)."""
    exits: list[tuple[int, int]] = []
    previous = signal.getsignal(signal.SIGTERM)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        handed_over = asyncio.Event()

        def uvicorn_exit(sig, frame):
            exits.append((sig, state.in_flight))
            handed_over.set()

        signal.signal(signal.SIGTERM, uvicorn_exit)
        state.install(grace_s)
        state.in_flight = 1
        if finish_after_s is not None:
            loop.call_later(finish_after_s, lambda: setattr(state, "in_flight", 0))
        for _ in range(signals):
            signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(handed_over.wait(), timeout=10)

    try:
        asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGTERM, previous)
    return exits


def test_sigterm_waits_for_the_requests_in_flight_then_hands_over_to_uvicorn():
    state = Drain()
    exits = _drain_with(state, grace_s=30, finish_after_s=0.3)
    assert exits == [(signal.SIGTERM, 0)] and state.draining  # handed over once the last request finished


def test_the_grace_period_ends_the_wait_even_with_requests_in_flight():
    state = Drain()
    exits = _drain_with(state, grace_s=0.2, finish_after_s=None)
    assert exits == [(signal.SIGTERM, 1)]


def test_a_second_sigterm_stops_waiting():
    state = Drain()
    exits = _drain_with(state, grace_s=600, finish_after_s=None, signals=2)
    assert exits[0] == (signal.SIGTERM, 1)  # handed over with the request still in flight
