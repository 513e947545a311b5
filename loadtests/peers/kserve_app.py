"""KServe's Python model server (the `kserve` package, what an InferenceService's custom predictor
runs) serving nnserve's models by its v1 and v2 protocols, as its docs set one up: a `kserve.Model`
per model, `ModelServer(workers=...)` one uvicorn worker per core. v1: rows are `instances` (a batch:
many), a photo an instance {"image": {"b64": ...}}, the form of KServe's image examples. v2: a table
as one tensor per column, a photo as base64 in a BYTES tensor; the answer as V2 outputs, one per field. Validation,
encoding, decoding and answers are nnserve's (loadtests/peers/common.py); a request that does not
validate is KServe's InvalidInput (400).

    python loadtests/peers/kserve_app.py --port PORT --workers N
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import kserve
from common import TABULAR, TAGGER, GraphModel, ImageModel, TabularModel, command_line, v2_outputs  # noqa: I001
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from pydantic import ValidationError


class Served(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.served = self.load_served()
        self.ready = True

    def load_served(self) -> Any:
        raise NotImplementedError

    # With workers > 1 KServe hands each uvicorn worker process a pickled copy of its models: the
    # onnxruntime session does not pickle, so each copy loads its own.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "served"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.served = self.load_served()


class Tabular(Served):
    def load_served(self) -> TabularModel:
        return TabularModel(self.name)

    def predict(self, payload: dict | InferRequest, headers: dict | None = None) -> dict | InferResponse:
        v2 = isinstance(payload, InferRequest)
        try:
            rows = [self.served.validate(row) for row in (v2_rows(payload) if v2 else payload["instances"])]
        except ValidationError as e:
            raise InvalidInput(str(e)) from None
        answers = self.served.predict(rows)
        return v2_response(self.name, answers) if v2 else {"predictions": answers}


class Tagger(Served):
    def load_served(self) -> ImageModel:
        return ImageModel(self.name)

    def predict(self, payload: dict | InferRequest, headers: dict | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):  # base64 text: KServe reads binary BYTES as UTF-8
            photos = [base64.b64decode(p) for p in payload.inputs[0].as_numpy().reshape(-1)]
            return v2_response(self.name, [self.served.tag(photo) for photo in photos])
        try:
            photos = [base64.b64decode(i["image"]["b64"], validate=True) for i in payload["instances"]]
        except (KeyError, TypeError, binascii.Error) as e:
            raise InvalidInput(f"instances: each {{'image': {{'b64': <photo>}}}}: {e}") from None
        return {"predictions": [self.served.tag(photo) for photo in photos]}


class Tensors(Served):
    """The gRPC scenarios' model, `<name>-tensors`: the graph's own tensors in, its output out, by KServe's
    gRPC endpoint (its V2 GRPCInferenceService)."""

    def __init__(self, name: str) -> None:
        self.table = name
        super().__init__(f"{name}-tensors")

    def load_served(self) -> GraphModel:
        return GraphModel(self.table)

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        given = {i.name: i.as_numpy() for i in payload.inputs}
        try:
            arrays = [given[name] for name, _, _ in self.served.inputs]
        except KeyError as e:
            raise InvalidInput(f"no input {e}") from None
        answer = self.served.run(*arrays)
        output = InferOutput(name=self.served.output, shape=list(answer.shape), datatype="FP32")
        output.set_data_from_numpy(answer, binary_data=True)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[output])


def v2_rows(request: InferRequest) -> list[dict]:
    """A v2 request's columns -> rows (BYTES as text)."""
    columns = {i.name: [v.decode() if isinstance(v, bytes) else v for v in i.as_numpy().reshape(-1).tolist()]
               for i in request.inputs}  # fmt: skip
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def v2_response(name: str, answers: list[dict]) -> InferResponse:
    outputs = [InferOutput(**output) for output in v2_outputs(answers)]
    return InferResponse(response_id="", model_name=name, infer_outputs=outputs)


if __name__ == "__main__":
    args = command_line()
    grpc = {"grpc_port": args.grpc_port, "enable_grpc": True} if args.grpc_port else {"enable_grpc": False}
    kserve.ModelServer(http_port=args.port, workers=args.workers, **grpc).start(
        [Tabular(name) for name in TABULAR] + [Tensors(name) for name in TABULAR] + ([Tagger(TAGGER)] if TAGGER else [])
    )
