"""Admission control: a bounded number in flight, a bounded queue, 503 with Retry-After beyond."""

from __future__ import annotations

import asyncio

from service.admission import AdmissionControl, is_prediction


def test_which_paths_are_limited():
    assert is_prediction("/v1/housing-price/predict") and is_prediction("/v1/image-tagging/predict-batch-base64")
    assert is_prediction("/v2/models/ad-click/infer") and is_prediction("/v2/models/ad-click/versions/1/infer")
    assert not any(map(is_prediction, ["/livez", "/readyz", "/metrics", "/v1/models", "/v2/models/ad-click"]))


def test_beyond_the_slots_and_the_queue_is_503_at_once_and_it_recovers():
    async def scenario():
        release = asyncio.Event()
        entered = asyncio.Event()

        async def slow(scope, receive, send):
            entered.set()
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        gate = AdmissionControl(slow, max_in_flight=1, max_queue=1)

        async def call(path="/v1/housing-price/predict"):
            sent = []

            async def send(message):
                sent.append(message)

            await gate({"type": "http", "path": path, "headers": []}, None, send)
            return sent[0]["status"], dict(sent[0]["headers"])

        first = asyncio.create_task(call())
        await entered.wait()  # one in flight
        second = asyncio.create_task(call())
        while gate.waiting < 1:  # one queued
            await asyncio.sleep(0)
        third_status, third_headers = await call()  # no slot, no room in the queue: refused at once
        probe = asyncio.create_task(call("/livez"))  # probes are never limited (this one waits on `slow` too)
        release.set()
        statuses = [(await first)[0], (await second)[0], (await probe)[0], (await call())[0]]
        return third_status, third_headers, statuses, gate.in_flight, gate.waiting

    status, headers, after, in_flight, waiting = asyncio.run(scenario())
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert after == [200, 200, 200, 200] and in_flight == 0 and waiting == 0


def test_a_cancelled_request_frees_its_slot():
    async def scenario():
        async def hang(scope, receive, send):
            await asyncio.Event().wait()

        gate = AdmissionControl(hang, max_in_flight=1, max_queue=0)
        task = asyncio.create_task(gate({"type": "http", "path": "/v1/ad-click/predict", "headers": []}, None, None))
        while gate.in_flight < 1:
            await asyncio.sleep(0)
        task.cancel()  # what BentoML's timeout does before answering 504
        await asyncio.gather(task, return_exceptions=True)
        return gate.in_flight, gate._slots.locked()

    assert asyncio.run(scenario()) == (0, False)
