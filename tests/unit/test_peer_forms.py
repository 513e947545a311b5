"""The forms the bench sends each peer, and how their answers are read back as nnserve's: a wrong
form or a wrong reading would make the bench's same-answer check compare the wrong things."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

from loadtests.bench import scenarios
from loadtests.peers.stacks import base64_json, kserve_answer, kserve_v1, kserve_v2, torchserve, v2_answer, v2_tensors
from service.protocol.rpc.proto import grpc_service_pb2 as pb

SCENARIOS = {s.name: s for s in scenarios()}


def test_a_batch_goes_to_kserve_as_its_instances_and_comes_back_as_nnserves_batch_answer():
    batch = SCENARIOS["adclick-batch256"]
    sent = kserve_v1(batch)
    instances = json.loads(sent.body)["instances"]
    assert sent.route == "/v1/models/ad-click:predict" and instances == json.loads(batch.body)["impressions"]
    served = {"model": "ad-click", "version": "1"}
    rows = [{"click_probability": 0.5, "warnings": []}, {"click_probability": 0.25, "warnings": []}]
    answers = [{**served, **row} for row in rows]
    assert kserve_answer({"predictions": answers}, batch) == {**served, "predictions": rows}
    assert kserve_answer({"predictions": answers[:1]}, SCENARIOS["adclick-1row"]) == answers[0]


def test_triton_gets_a_table_as_typed_columns_and_a_photo_as_a_binary_bytes_tensor():
    batch = SCENARIOS["adclick-batch256"]
    inputs = {i["name"]: i for i in json.loads(v2_tensors(batch).body)["inputs"]}
    assert inputs["age"]["shape"] == [256, 1] and inputs["age"]["datatype"] == "INT64"
    assert inputs["gender"]["datatype"] == "BYTES" and len(inputs["gender"]["data"]) == 256
    photo = SCENARIOS["tagger-cifar"]
    sent = v2_tensors(photo)
    header_length = int(sent.headers["Inference-Header-Content-Length"])
    header, data = json.loads(sent.body[:header_length]), sent.body[header_length:]
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(data) == len(photo.photo) + 4
    assert int.from_bytes(data[:4], "little") == len(photo.photo) and data[4:] == photo.photo


def test_v2_outputs_read_back_as_one_answer_or_a_batch():
    warnings = ["[]", '[{"field": "age"}]']
    out = [{"name": "model", "data": ["ad-click"]}, {"name": "version", "data": ["1"]},
           {"name": "click_probability", "data": [0.5, 0.25]}, {"name": "warnings", "data": warnings}]  # fmt: skip
    rows = [{"click_probability": 0.5, "warnings": []}, {"click_probability": 0.25, "warnings": [{"field": "age"}]}]
    assert v2_answer({"outputs": out}, SCENARIOS["adclick-batch256"]) == {"model": "ad-click", "version": "1",
                                                                          "predictions": rows}  # fmt: skip
    one = [o if o["name"] in ("model", "version") else {**o, "data": o["data"][:1]} for o in out]
    assert v2_answer({"outputs": one}, SCENARIOS["adclick-1row"]) == {
        "model": "ad-click",
        "version": "1",
        "click_probability": 0.5,
        "warnings": [],
    }


def test_a_photo_goes_as_the_file_to_torchserve_and_as_base64_json_where_multipart_cannot():
    photo = SCENARIOS["tagger-224-1000class"]
    sent = torchserve(photo)
    assert sent.route == "/predictions/imagenet-classifier" and sent.body == photo.photo
    sent = base64_json(photo)
    assert sent.route == "/v1/image-tagging/predict-base64"
    assert base64.b64decode(json.loads(sent.body)["image_base64"]) == photo.photo
    table = SCENARIOS["housing-1row"]
    assert base64_json(table) == table and torchserve(table) == replace(table, route="/predictions/housing-price")


def test_a_grpc_scenario_goes_to_the_peers_tensors_model_with_the_same_tensors():
    ours = SCENARIOS["adclick-batch256-grpc"]
    for form in (v2_tensors, kserve_v2):  # Triton's, KServe's
        sent = pb.ModelInferRequest.FromString(form(ours).body)
        original = pb.ModelInferRequest.FromString(ours.body)
        assert sent.model_name == "ad-click-tensors" and original.model_name == "ad-click"
        assert sent.raw_input_contents == original.raw_input_contents and sent.inputs == original.inputs
