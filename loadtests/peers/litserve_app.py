"""LitServe serving nnserve's models as its docs set it up for production on CPUs: one LitAPI per route
(nnserve's routes), inference workers per core (`workers_per_device`), ZeroMQ between the API
servers and the workers (`fast_queue`, "for > 100 RPS"), and dynamic batching of concurrent one-row
requests (`max_batch_size`, `batch_timeout`). Photos come as base64 in JSON at nnserve's route for
that form: LitServe passes a request to its workers pickled, and a multipart upload (an open file)
does not pickle. Validation, encoding, decoding and answers are nnserve's (loadtests/peers/common.py).

    python loadtests/peers/litserve_app.py --port PORT --workers N
"""

from __future__ import annotations

import base64
import binascii

import litserve as ls
from common import TABULAR, TAGGER, ImageModel, TabularModel, command_line  # noqa: I001 - the script's folder
from fastapi import HTTPException
from pydantic import ValidationError


def _invalid(e: ValidationError) -> HTTPException:
    return HTTPException(status_code=422, detail=e.errors(include_url=False, include_context=False))


class Tabular(ls.LitAPI):
    def __init__(self, name: str) -> None:
        super().__init__(max_batch_size=16, batch_timeout=0.001, api_path=f"/v1/{name}/predict")
        self.name = name

    def setup(self, device: str) -> None:
        self.served = TabularModel(self.name)

    def decode_request(self, request: dict) -> dict:
        try:
            return self.served.validate(request)
        except ValidationError as e:
            raise _invalid(e) from None

    def batch(self, inputs: list[dict]) -> list[dict]:
        return inputs

    def predict(self, rows: list[dict]) -> list[dict]:
        return self.served.predict(rows)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


class TabularBatch(ls.LitAPI):
    """nnserve's batch route: the request is already a batch, so no batching of requests."""

    def __init__(self, name: str) -> None:
        super().__init__(api_path=f"/v1/{name}/predict-batch")
        self.name = name

    def setup(self, device: str) -> None:
        self.served = TabularModel(self.name)

    def decode_request(self, request: dict) -> list[dict]:
        try:
            return self.served.validate_batch(request)
        except ValidationError as e:
            raise _invalid(e) from None

    def predict(self, rows: list[dict]) -> dict:
        return self.served.predict_batch(rows)

    def encode_response(self, output: dict) -> dict:
        return output


class Tagger(ls.LitAPI):
    def __init__(self) -> None:
        super().__init__(api_path="/v1/image-tagging/predict-base64")

    def setup(self, device: str) -> None:
        self.served = ImageModel(TAGGER)

    def decode_request(self, request: dict) -> tuple[bytes, int]:
        try:
            return base64.b64decode(request["image_base64"], validate=True), int(request.get("top_k", 5))
        except (KeyError, ValueError, binascii.Error) as e:
            raise HTTPException(status_code=422, detail=f"image_base64: {e}") from None

    def predict(self, photo: tuple[bytes, int]) -> dict:
        return self.served.tag(*photo)

    def encode_response(self, output: dict) -> dict:
        return output


if __name__ == "__main__":
    args = command_line()
    apis = [api for name in TABULAR for api in (Tabular(name), TabularBatch(name))] + ([Tagger()] if TAGGER else [])
    server = ls.LitServer(apis, accelerator="cpu", workers_per_device=args.workers, fast_queue=True, timeout=30)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)
