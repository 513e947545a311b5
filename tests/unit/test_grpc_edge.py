"""The gRPC edge (service/protocol/rpc/edge.py) with a stand-in call context: each way a call can end maps to
its code, with the same keys, admission, drain and timeout as the HTTP edge; and the generated messages are
those the committed .proto files make."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys

import grpc
import pytest

from service.errors import InvalidInput, NotFound, PayloadTooLarge
from service.protocol.admission import Admission
from service.protocol.auth import ApiKeyAuth
from service.protocol.rpc.edge import Malformed, RpcEdge, code_of
from service.shutdown import drain
from tests.conftest import REPO

PATH = "/inference.GRPCInferenceService/ModelInfer"


class Aborted(Exception):
    pass


class Call:
    """What a grpc.aio servicer context offers the edge."""

    def __init__(self, metadata=()) -> None:
        self.metadata, self.code, self.details, self.trailing = metadata, None, None, ()

    def invocation_metadata(self):
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    def set_trailing_metadata(self, trailing) -> None:
        self.trailing = trailing

    async def abort(self, code, details):
        self.code, self.details = code, details
        raise Aborted


class Plane:
    def __init__(self) -> None:
        self.counted = []

    def count(self, model, version, status, seconds) -> None:
        self.counted.append((model, version, status))


def _edge(keys=(), max_in_flight=4, max_queue=0, timeout_s=30) -> RpcEdge:
    auth = ApiKeyAuth(list(keys), frozenset({"/grpc.health.v1.Health/Check"}))
    return RpcEdge(auth, Admission(max_in_flight, max_queue), timeout_s, Plane(), None)


def _run(edge: RpcEdge, handler, request=None, metadata=(), prediction=True) -> tuple[object, Call]:
    call = Call(metadata)

    async def go():
        try:
            return await edge.call(call, PATH, handler, request, prediction=prediction)
        except Aborted:
            return None

    return asyncio.run(go()), call


async def _answered(ctx, request):
    ctx.answered_by("housing-price", "1")
    return "reply"


@pytest.mark.parametrize(
    ("error", "code"),
    [(InvalidInput("bad"), grpc.StatusCode.INVALID_ARGUMENT), (NotFound("no model x"), grpc.StatusCode.NOT_FOUND),
     (PayloadTooLarge("a batch over the limit"), grpc.StatusCode.INVALID_ARGUMENT),
     (RuntimeError("a bug"), grpc.StatusCode.INTERNAL)],
)  # fmt: skip
def test_each_failure_becomes_its_code_and_only_a_bug_is_internal(error, code):
    async def fails(ctx, request):
        raise error

    reply, call = _run(_edge(), fails)
    assert reply is None and call.code == code
    if code == grpc.StatusCode.INTERNAL:
        assert "a bug" not in call.details and "request id" in call.details  # no internals, an id to look up
    else:
        assert call.details == error.message
    assert call.trailing[0][0] == "x-request-id"


def test_a_reply_and_its_prediction_counted():
    edge = _edge()
    reply, call = _run(edge, _answered)
    assert reply == "reply" and call.code is None and edge.plane.counted == [("housing-price", "1", 200)]


def test_keys_from_the_metadata_and_exempt_paths():
    edge = _edge(keys=[b"k"])
    assert _run(edge, _answered)[1].code == grpc.StatusCode.UNAUTHENTICATED
    assert "x-api-key" in _run(edge, _answered)[1].details  # says how, in gRPC's words
    assert _run(edge, _answered, metadata=(("x-api-key", "k"),))[0] == "reply"
    assert _run(edge, _answered, metadata=(("authorization", "Bearer k"),))[0] == "reply"
    two = (("authorization", "Bearer k"), ("x-api-key", "k"))
    assert _run(edge, _answered, metadata=two)[1].code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_malformed_request_is_invalid_argument_naming_its_message():
    reply, call = _run(_edge(), _answered, request=Malformed("ModelInferRequest", "Error parsing message"))
    assert call.code == grpc.StatusCode.INVALID_ARGUMENT and "not a ModelInferRequest message" in call.details


def test_admission_full_is_resource_exhausted_and_draining_is_unavailable():
    edge = _edge(max_in_flight=1, max_queue=0)

    async def go():
        started = asyncio.Event()

        async def slow(ctx, request):
            started.set()
            await asyncio.sleep(0.2)
            return "slow"

        call, second = Call(), Call()
        first = asyncio.create_task(edge.call(call, PATH, slow, None, prediction=True))
        await started.wait()
        with contextlib.suppress(Aborted):
            await edge.call(second, PATH, _answered, None, prediction=True)
        return await first, second

    first, second = asyncio.run(go())
    assert first == "slow" and second.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "overloaded" in second.details
    assert edge.admission.in_flight == 0 and drain.in_flight == 0
    drain.draining = True
    try:
        reply, call = _run(edge, _answered)
        assert call.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in call.details
        assert _run(edge, _answered, prediction=False)[0] == "reply"  # metadata and probes still answer
    finally:
        drain.draining = False


def test_the_request_timeout_is_deadline_exceeded_and_frees_the_slot():
    edge = _edge(timeout_s=0.05)

    async def stuck(ctx, request):
        await asyncio.sleep(5)

    reply, call = _run(edge, stuck)
    assert call.code == grpc.StatusCode.DEADLINE_EXCEEDED and "NNSERVE_REQUEST_TIMEOUT_S" in call.details
    assert edge.admission.in_flight == 0 and drain.in_flight == 0


def test_every_http_status_maps_to_a_code_and_no_client_mistake_to_unknown_or_internal():
    for status in range(400, 500):
        assert code_of(status) not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
    assert code_of(503) == grpc.StatusCode.UNAVAILABLE and code_of(504) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_generated_messages_are_current():
    check = [sys.executable, "-m", "service.protocol.rpc.proto.generate", "--check"]
    out = subprocess.run(check, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
