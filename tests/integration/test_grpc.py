"""The Open Inference Protocol over gRPC against a real `bentoml serve` (2 workers): tritonclient.grpc, sync and
aio, unchanged; the answers equal to the HTTP route's; typed contents; the health and reflection services;
every client mistake a named INVALID_ARGUMENT or NOT_FOUND; hostile calls (malformed, oversize, cancelled,
a thousand at once) leave it ready; keys, management, the drain and a port in use."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.grpc.aio as tgrpc_aio
import tritonclient.http as thttp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from loadtests.photos import cifar_photos
from loadtests.ports import free_port
from loadtests.serving import bentoml_serve, metrics_containing, server_log, server_processes
from tests.conftest import CIFAR_VAL, MODELS
from tests.integration.test_http import HOUSE, IMPRESSION
from tests.integration.test_oip import HOUSES, IMPRESSIONS, _pixels, _tabular
from training.contract import AD_CLICK, HOUSING

SERVICE = "inference.GRPCInferenceService"
OK_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip


@pytest.fixture(scope="module")
def target(server, grpc_port):
    return f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def client(target):
    c = tgrpc.InferenceServerClient(target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(target):
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _inputs(module, arrays: dict[str, np.ndarray], datatypes: dict[str, str]) -> list:
    inputs = []
    for name, array in arrays.items():
        item = module.InferInput(name, list(array.shape), datatypes[name])
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def _cases() -> list[tuple[str, dict[str, np.ndarray], dict[str, str], str]]:
    """(model, inputs, datatypes, output) for every committed model."""
    cases = []
    for name, spec, rows, output in [("housing-price", HOUSING, HOUSES, "price"),
                                     ("ad-click", AD_CLICK, IMPRESSIONS, "click_probability")]:  # fmt: skip
        numeric, codes = _tabular(spec, rows)
        cases.append((name, {"numeric": numeric, "categorical": codes}, {"numeric": "FP32", "categorical": "INT64"},
                      output))  # fmt: skip
    pixels = _pixels([jpeg for _, jpeg in cifar_photos(CIFAR_VAL, 1)[:4]])
    cases.append(("image-tagging", {"image": pixels}, {"image": "UINT8"}, "probabilities"))
    return cases


def test_health_metadata_config_and_statistics(client, stub, server):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "nnserve" and "model_repository" in meta.extensions
    http = thttp.InferenceServerClient(server.removeprefix("http://"))
    for name in ("housing-price", "ad-click", "image-tagging"):
        assert client.is_model_ready(name) and client.is_model_ready(name, model_version="1")
        grpc_meta = client.get_model_metadata(name, as_json=True)
        http_meta = http.get_model_metadata(name)
        for key in ("name", "versions", "platform", "inputs", "outputs"):
            got = grpc_meta[key]
            if key in ("inputs", "outputs"):  # protobuf's JSON writes int64 as strings
                got = [{**t, "shape": [int(d) for d in t["shape"]]} for t in got]
            assert got == http_meta[key], (name, key)
    assert not client.is_model_ready("nope") and not client.is_model_ready("housing-price", model_version="9")
    config = client.get_model_config("housing-price", as_json=True)["config"]
    assert config["max_batch_size"] == 1024 and config["platform"] == "onnxruntime_onnx"
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("numeric", "TYPE_FP32", ["13"]), ("categorical", "TYPE_INT64", ["1"])]  # fmt: skip
    assert json.loads(config["parameters"]["numeric_columns"]["string_value"]) == [f.name for f in HOUSING.numeric]
    before = _answered(client, "ad-click")
    name, arrays, datatypes, _ = _cases()[1]
    for _ in range(6):  # spread over the connection's worker; the statistics are every worker's
        client.infer(name, _inputs(tgrpc, arrays, datatypes))
    assert httpx.post(server + "/v1/ad-click/predict", json=IMPRESSION).status_code == 200  # and over HTTP
    stats = client.get_inference_statistics("ad-click", as_json=True)["model_stats"][0]
    assert _answered(client, "ad-click") >= before + 7
    assert int(stats["inference_stats"]["success"]["ns"]) > 0
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.get_model_metadata("nope")


def _answered(client, name: str) -> int:
    stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
    return int(stats["inference_stats"]["success"].get("count", 0))


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_infer_equals_the_http_route_raw_and_pinned(client, server, case):
    name, arrays, datatypes, output = case
    http = thttp.InferenceServerClient(server.removeprefix("http://"))
    expected = http.infer(name, _inputs(thttp, arrays, datatypes)).as_numpy(output)
    result = client.infer(name, _inputs(tgrpc, arrays, datatypes), request_id="r-7")
    np.testing.assert_allclose(result.as_numpy(output), expected, rtol=1e-6, atol=1e-7)  # float32's precision
    response = result.get_response()
    assert response.model_name == name and response.model_version == "1" and response.id == "r-7"
    pinned = client.infer(name, _inputs(tgrpc, arrays, datatypes), model_version="1")
    np.testing.assert_allclose(pinned.as_numpy(output), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.infer(name, _inputs(tgrpc, arrays, datatypes), model_version="9")


def test_typed_contents_are_answered_in_typed_contents_and_the_classification_extension(stub, client):
    name, arrays, _, output = _cases()[0]
    raw = client.infer(name, _inputs(tgrpc, arrays, {"numeric": "FP32", "categorical": "INT64"})).as_numpy(output)
    request = pb.ModelInferRequest(model_name=name)
    request.inputs.add(name="numeric", datatype="FP32", shape=arrays["numeric"].shape).contents.fp32_contents.extend(
        arrays["numeric"].ravel().tolist())  # fmt: skip
    request.inputs.add(name="categorical", datatype="INT64", shape=arrays["categorical"].shape).contents \
        .int64_contents.extend(arrays["categorical"].ravel().tolist())  # fmt: skip
    answer = stub.ModelInfer(request)
    assert not answer.raw_output_contents and list(answer.outputs[0].shape) == [3, 1]
    np.testing.assert_allclose(np.array(answer.outputs[0].contents.fp32_contents), raw.ravel(), rtol=1e-6)

    pixels = _cases()[2][1]["image"]
    tags = pb.ModelInferRequest(model_name="image-tagging")
    tags.inputs.add(name="image", datatype="UINT8", shape=pixels.shape).contents.uint_contents.extend(
        pixels.ravel().tolist())  # fmt: skip
    wanted = tags.outputs.add(name="probabilities")
    wanted.parameters["classification"].int64_param = 2
    top = stub.ModelInfer(tags).outputs[0]
    assert top.datatype == "BYTES" and list(top.shape) == [4, 2]
    score, index, label = top.contents.bytes_contents[0].decode().split(":")
    assert 0 < float(score) <= 1 and int(index) >= 0 and label


def test_the_aio_client_too(target):
    async def run() -> list[np.ndarray]:
        async with tgrpc_aio.InferenceServerClient(target) as aio:
            assert await aio.is_server_ready()
            calls = [aio.infer(name, _inputs(tgrpc_aio, arrays, datatypes)) for name, arrays, datatypes, _ in _cases()]
            return [r.as_numpy(output) for r, (*_, output) in zip(await asyncio.gather(*calls), _cases(), strict=True)]

    answers = asyncio.run(run())
    assert answers[0].shape == (3, 1) and answers[2].shape == (4, 10)


def test_the_health_service_and_server_reflection(target):
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == 1  # SERVING
        with pytest.raises(grpc.RpcError) as missing:
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert next(watch).status == 1
        watch.cancel()
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
        described = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=SERVICE)])))  # fmt: skip
        assert described.file_descriptor_response.file_descriptor_proto  # grpcurl can describe it


def _request(model: str = "housing-price", rows: int = 1, **changes) -> pb.ModelInferRequest:
    numeric = np.ones((rows, 13), np.float32)
    codes = np.zeros((rows, 1), np.int64)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="numeric", datatype="FP32", shape=[rows, 13])
    request.inputs.add(name="categorical", datatype="INT64", shape=[rows, 1])
    request.raw_input_contents.extend([numeric.tobytes(), codes.tobytes()])
    for change in changes.values():
        change(request)
    return request


def _shape(i, shape):
    def change(r):
        del r.inputs[i].shape[:]
        r.inputs[i].shape.extend(shape)

    return change


MISTAKES = [
    ("unknown model", _request("nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    ("unknown version", _request(v=lambda r: setattr(r, "model_version", "9")), grpc.StatusCode.NOT_FOUND, "9"),
    ("missing input", _request(d=lambda r: (r.inputs.pop(), r.raw_input_contents.pop())),
     grpc.StatusCode.INVALID_ARGUMENT, "categorical"),
    ("wrong datatype", _request(d=lambda r: setattr(r.inputs[0], "datatype", "FP64")),
     grpc.StatusCode.INVALID_ARGUMENT, "numeric: datatype must be FP32"),
    ("a shape that lies about its data", _request(s=_shape(0, [2, 13]), t=_shape(1, [2, 1])),
     grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents[0]"),
    ("a huge batch", _request(s=_shape(0, [10**12, 13]), t=_shape(1, [10**12, 1])),
     grpc.StatusCode.INVALID_ARGUMENT, "NNSERVE_MAX_BATCH_ROWS"),
    ("a negative dimension", _request(s=_shape(0, [-1, 13])), grpc.StatusCode.INVALID_ARGUMENT, "numeric: shape"),
    ("raw for one input only", _request(d=lambda r: r.raw_input_contents.pop()),
     grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents holds 1 entries for 2 inputs"),
    ("typed contents of another type", _request(d=lambda r: (r.ClearField("raw_input_contents"),
                                                             r.inputs[0].contents.int64_contents.extend([1] * 13),
                                                             r.inputs[1].contents.int64_contents.append(1))),
     grpc.StatusCode.INVALID_ARGUMENT, "numeric: datatype FP32 takes its values in contents.fp32_contents"),
    ("an output it does not have", _request(o=lambda r: r.outputs.add(name="nope")),
     grpc.StatusCode.INVALID_ARGUMENT, "not 'nope'"),
    ("a bad classification", _request(o=lambda r: r.outputs.add(name="price").parameters["classification"]
                                      .__setattr__("int64_param", 3)), grpc.StatusCode.INVALID_ARGUMENT, "no labels"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "request_", "code", "says"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_client_mistakes_are_named_invalid_argument_or_not_found(stub, what, request_, code, says):
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request_)
    assert e.value.code() == code and says in e.value.details(), (what, e.value.details())


def test_malformed_and_oversize_messages_and_unimplemented_methods(target):
    with grpc.insecure_channel(target) as channel:
        raw = channel.unary_unary(f"/{SERVICE}/ModelInfer", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as malformed:
            raw(b"\x0a\xff\xff\xff\xff\x0f")  # a string field whose length runs past the message
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a ModelInferRequest message" in malformed.value.details()
        big = _request()
        big.raw_input_contents[0] = b"\x00" * (5 * 1024 * 1024)  # the test server takes 4 MiB bodies
        with pytest.raises(grpc.RpcError) as oversize:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(big)
        assert oversize.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as streaming:
            list(pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([_request()])))
        assert streaming.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_request()).model_name == "housing-price"


def test_cancelled_calls_and_a_thousand_streams_leave_it_ready(target, server):
    pids = {p.pid for p in server_processes(server)}
    photos = pb.ModelInferRequest(model_name="image-tagging")
    pixels = np.zeros((64, 32, 32, 3), np.uint8)
    photos.inputs.add(name="image", datatype="UINT8", shape=pixels.shape)
    photos.raw_input_contents.append(pixels.tobytes())

    async def run() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(20):  # cancelled mid-way
                call = stub.ModelInfer(photos)
                await asyncio.sleep(0.002)
                call.cancel()
            codes = []

            async def one(i: int) -> None:
                try:
                    await stub.ModelInfer(photos if i % 10 == 0 else _request(rows=8))
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as e:
                    codes.append(e.code())

            await asyncio.gather(*(one(i) for i in range(1000)))
            return codes

    codes = asyncio.run(run())
    assert set(codes) <= OK_CODES and codes.count(grpc.StatusCode.OK) > 0, sorted(set(map(str, codes)))
    assert httpx.get(server + "/readyz").status_code == 200
    assert {p.pid for p in server_processes(server)} == pids  # no worker died, none was added
    idle = "\nnnserve_in_flight 0.0"
    assert idle in metrics_containing(server, idle)  # every call, cancelled ones included, left the count


def test_compressed_requests_deadlines_and_what_is_not_grpc(client, target, server):
    """The transport (service/protocol/rpc/http2.py) with real clients: gzip and deflate requests answered as
    plain ones, the client's deadline ends a call DEADLINE_EXCEEDED, and HTTP/1 or broken HTTP/2 on the port
    closes only that connection."""
    name, arrays, datatypes, output = _cases()[0]
    plain = client.infer(name, _inputs(tgrpc, arrays, datatypes)).as_numpy(output)
    for algorithm in ("gzip", "deflate"):
        packed = client.infer(name, _inputs(tgrpc, arrays, datatypes), compression_algorithm=algorithm)
        np.testing.assert_array_equal(packed.as_numpy(output), plain)
    photos = pb.ModelInferRequest(model_name="image-tagging")
    photos.inputs.add(name="image", datatype="UINT8", shape=[64, 32, 32, 3])
    photos.raw_input_contents.append(bytes(64 * 32 * 32 * 3))
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as late:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(photos, timeout=0.001)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as http1:
        http1.sendall(b"POST /inference.GRPCInferenceService/ModelInfer HTTP/1.1\r\nHost: x\r\n\r\n")
        assert http1.recv(200).startswith(b"HTTP/1.1 400")
    with socket.create_connection((host, int(port)), timeout=10) as broken:
        broken.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            + b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"
        )  # SETTINGS, then DATA on stream 0
        answer = b""
        while chunk := broken.recv(4096):
            answer += chunk
        assert b"DATA on stream 0" in answer  # GOAWAY's debug data, then the close
    assert client.is_server_ready() and httpx.get(server + "/readyz").status_code == 200


KEY = "grpc-secret"


def test_api_keys_management_and_the_repository_over_grpc(tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    port = free_port()
    env = {"NNSERVE_API_KEYS": KEY, "NNSERVE_MANAGEMENT": "true", "NNSERVE_GRPC_PORT": str(port),
           "NNSERVE_WORKERS": "2"}  # fmt: skip
    with bentoml_serve(models, **env):
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live() and client.is_server_ready()  # probes need no key
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            client.get_model_metadata("housing-price")
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED.*invalid API key"):
            client.get_model_metadata("housing-price", headers={"x-api-key": "wrong"})
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*ambiguous"):
            client.get_model_metadata("housing-price", headers={"x-api-key": KEY, "authorization": f"Bearer {KEY}"})
        for headers in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
            assert client.get_model_metadata("housing-price", headers=headers).name == "housing-price"
        keyed = {"x-api-key": KEY}
        index = client.get_model_repository_index(headers=keyed)
        assert {(m.name, m.state) for m in index.models} >= {("ad-click", "READY"), ("housing-price", "READY")}
        client.unload_model("ad-click", headers=keyed)  # returns once every worker has unloaded it
        for _ in range(4):  # connections land on either worker
            fresh = tgrpc.InferenceServerClient(f"127.0.0.1:{port}")
            assert not fresh.is_model_ready("ad-click", headers=keyed)
            fresh.close()
        client.load_model("ad-click", headers=keyed)
        assert client.is_model_ready("ad-click", headers=keyed)
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*no model nope"):
            client.load_model("nope", headers=keyed)
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*not supported"):
            client.load_model("ad-click", config=json.dumps({"backend": "onnxruntime"}), headers=keyed)
        client.close()


def test_sigterm_refuses_grpc_predictions_unavailable_and_health_turns_not_serving():
    from tests.integration.test_faults import read_answer, start_slow_request

    port = free_port()
    with bentoml_serve(MODELS, NNSERVE_WORKERS="1", NNSERVE_SHUTDOWN_GRACE_S="20", NNSERVE_GRPC_PORT=str(port)) as url:
        holding = start_slow_request(url, json.dumps(HOUSE).encode(), sent=10)  # keeps the worker draining
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub, health = pb_grpc.GRPCInferenceServiceStub(channel), health_pb2_grpc.HealthStub(channel)
            assert stub.ModelInfer(_request()).model_name == "housing-price"
            main = server_processes(url)[0]
            main.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while health.Check(health_pb2.HealthCheckRequest()).status == 1 and time.monotonic() < deadline:
                time.sleep(0.05)  # polling until the drain has begun, with a deadline
            assert health.Check(health_pb2.HealthCheckRequest()).status == 2  # NOT_SERVING
            assert not stub.ServerReady(pb.ServerReadyRequest()).ready and stub.ServerLive(pb.ServerLiveRequest()).live
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(_request())
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in refused.value.details()
        holding.sendall(json.dumps(HOUSE).encode()[10:])
        assert read_answer(holding)[0] == 200
        main.wait(timeout=25)
        assert "drained: no prediction in flight" in server_log(url).read_text()


def test_a_grpc_port_in_use_stops_start_up_naming_it():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with (
            pytest.raises(RuntimeError, match="bentoml serve exited") as failure,
            bentoml_serve(MODELS, deadline_s=60, NNSERVE_WORKERS="1", NNSERVE_GRPC_PORT=str(port)),
        ):
            pass
        assert f"NNSERVE_GRPC_PORT={port}" in str(failure.value) and "in use" in str(failure.value)
    finally:
        holder.close()
