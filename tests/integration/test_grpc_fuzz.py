"""ModelInfer fuzzed over its message's fields (hypothesis), and over raw bytes, against the real server's gRPC
port: every answer is OK or a client mistake's code (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED), never
UNKNOWN or INTERNAL, and the server is ready after. Requests mix coherent ones (the graph's names, datatypes and
batch shapes with random data, NaN and huge codes included) with nonsense in every field.

`make test` runs 8 x 25 examples of each; `make fuzz` 8 x 300 (NNSERVE_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

EXAMPLES = 8 * int(os.environ.get("NNSERVE_FUZZ_EXAMPLES", "25"))
CLIENT_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}
SIGNATURES = {  # the committed graphs' inputs: (name, datatype, per-row shape)
    "housing-price": [("numeric", "FP32", [13]), ("categorical", "INT64", [1])],
    "ad-click": [("numeric", "FP32", [1]), ("categorical", "INT64", [9])],
    "image-tagging": [("image", "UINT8", [32, 32, 3])],
}
ITEM = {"FP32": 4, "INT64": 8, "UINT8": 1}
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip

names = st.sampled_from(["numeric", "categorical", "image", "zipcode", ""]) | st.text(max_size=12)
datatypes = st.sampled_from(["FP32", "INT64", "UINT8", "BYTES", "FP16", "FP64", "INT32", "BOOL", ""]) | st.text(
    max_size=6
)
dims = st.integers(-2, 40) | st.integers(-(2**63), 2**63 - 1)
contents = st.one_of(
    st.none(),
    st.builds(pb.InferTensorContents, fp32_contents=st.lists(st.floats(width=32), max_size=40)),
    st.builds(pb.InferTensorContents, int64_contents=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40)),
    st.builds(pb.InferTensorContents, uint_contents=st.lists(st.integers(0, 2**32 - 1), max_size=40)),
    st.builds(pb.InferTensorContents, bytes_contents=st.lists(st.binary(max_size=8), max_size=10)),
    st.builds(pb.InferTensorContents, bool_contents=st.lists(st.booleans(), max_size=10)),
)


@st.composite
def nonsense(draw) -> pb.ModelInferRequest:
    """Any field, any value."""
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from([*SIGNATURES, "nope", ""]) | st.text(max_size=40)),
        model_version=draw(st.sampled_from(["", "1", "9"]) | st.text(max_size=4)),
        id=draw(st.text(max_size=8)),
    )
    for _ in range(draw(st.integers(0, 4))):
        item = request.inputs.add(name=draw(names), datatype=draw(datatypes), shape=draw(st.lists(dims, max_size=5)))
        value = draw(contents)
        if value is not None:
            item.contents.CopyFrom(value)
        if draw(st.booleans()):
            item.parameters["binary_data_size"].int64_param = draw(st.integers(-5, 100))
    request.raw_input_contents.extend(draw(st.lists(st.binary(max_size=600), max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        out = request.outputs.add(name=draw(st.sampled_from(["price", "click_probability", "probabilities", "x"])))
        if draw(st.booleans()):
            out.parameters["classification"].int64_param = draw(st.integers(-3, 20))
    return request


@st.composite
def coherent(draw) -> pb.ModelInferRequest:
    """The graph's own inputs and batch shapes, with random data: raw bytes (NaN, Inf, huge codes) or typed."""
    model = draw(st.sampled_from(sorted(SIGNATURES)))
    rows = draw(st.integers(1, 6))
    request = pb.ModelInferRequest(model_name=model)
    raw = draw(st.booleans())
    for name, datatype, per_row in SIGNATURES[model]:
        shape = [rows, *per_row]
        count = int(np.prod(shape))
        item = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            request.raw_input_contents.append(draw(st.binary(min_size=count * ITEM[datatype],
                                                             max_size=count * ITEM[datatype])))  # fmt: skip
        elif datatype == "FP32":
            item.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), min_size=count, max_size=count)))
        elif datatype == "INT64":
            values = st.lists(st.integers(-(2**63), 2**63 - 1), min_size=count, max_size=count)
            item.contents.int64_contents.extend(draw(values))
        else:
            item.contents.uint_contents.extend(draw(st.lists(st.integers(0, 300), min_size=count, max_size=count)))
    if model == "image-tagging" and draw(st.booleans()):
        request.outputs.add(name="probabilities").parameters["classification"].int64_param = draw(st.integers(-1, 12))
    return request


@pytest.fixture(scope="module")
def channel(server, grpc_port):
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        yield channel
    assert httpx.get(server + "/readyz").status_code == 200  # ready after all of it


@FUZZ
@given(request=nonsense() | coherent())
def test_model_infer_answers_ok_or_a_client_code(channel, request):
    try:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    except grpc.RpcError as e:
        assert e.code() in CLIENT_CODES, (e.code(), e.details())


@FUZZ
@given(body=st.binary(max_size=2000))
def test_any_bytes_as_a_model_infer_request(channel, body):
    call = channel.unary_unary(f"/{pb.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name}/ModelInfer")
    try:
        call(body, timeout=30)
    except grpc.RpcError as e:
        assert e.code() in CLIENT_CODES, (e.code(), e.details())
