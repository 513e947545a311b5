"""A Locust user that speaks the Open Inference Protocol over gRPC: one-row houses and 16-impression batches as
raw tensors (the form tritonclient sends), every answer checked (the model, the shape, finite values).

    locust -f loadtests/locustfile.py,loadtests/locust_grpc.py --host http://127.0.0.1:3000
    (NNSERVE_GRPC_TARGET=127.0.0.1:8001: where gRPC goes; make swarm-test sends it through the proxy)

Its channel retries UNAVAILABLE, as gRPC's service config lets a client do and as a client of a draining
server must (the server refuses new calls UNAVAILABLE while it drains; a proxy answers 502 or 503 for a
replica that went away, which gRPC reads as UNAVAILABLE): the HTTP users' retries are the proxy's.
"""

from __future__ import annotations

import json
import os
import time

import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import User, between, events, task

from loadtests.grpc_load import tabular_request
from loadtests.payloads import houses, impressions
from loadtests.serving import REPO
from service.protocol.rpc.proto import grpc_service_pb2 as pb
from service.protocol.rpc.proto import grpc_service_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()  # Locust's users are greenlets: gRPC's waits must yield to them
RETRY = json.dumps({"methodConfig": [{
    "name": [{"service": "inference.GRPCInferenceService"}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]},
}]})  # fmt: skip
MODELS = REPO / "models"
REQUESTS = {  # (name in the stats, request, output, rows, low, high)
    "housing-price": (pb.ModelInferRequest.FromString(tabular_request(MODELS / "housing-price", houses()[:1])),
                      "price", 1, 1e4, 1e8),
    "ad-click": (pb.ModelInferRequest.FromString(tabular_request(MODELS / "ad-click", impressions()[:16])),
                 "click_probability", 16, 0.0, 1.0),
}  # fmt: skip


class GrpcUser(User):
    weight = 2
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        target = os.environ.get("NNSERVE_GRPC_TARGET", "127.0.0.1:8001")
        options = [("grpc.enable_retries", 1), ("grpc.service_config", RETRY)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    @task(3)
    def house(self) -> None:
        self.infer("housing-price")

    @task(1)
    def impressions(self) -> None:
        self.infer("ad-click")

    def infer(self, model: str) -> None:
        request, output, rows, low, high = REQUESTS[model]
        start, error, size = time.perf_counter(), None, 0
        try:
            answer = self.stub.ModelInfer(request, timeout=30)
            size = answer.ByteSize()
            values = np.frombuffer(answer.raw_output_contents[0], "<f4")
            if answer.model_name != model or answer.outputs[0].name != output or values.size != rows:
                error = AssertionError(f"{model}: {answer.outputs[0].name} of {values.size} values for {rows} rows")
            elif not np.all((values >= low) & (values <= high)):
                error = AssertionError(f"{output} out of [{low}, {high}]: {values[:3]}")
        except grpc.RpcError as e:
            error = e
        events.request.fire(request_type="grpc", name=f"ModelInfer {model}", response_time=(time.perf_counter() - start)
                            * 1000, response_length=size, exception=error, context={})  # fmt: skip
