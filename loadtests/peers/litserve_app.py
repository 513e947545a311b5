"""LitServe serving the tabular models as its docs set it up for production on CPUs: one LitAPI per
model at nnserve's route, inference workers per core (`workers_per_device`), ZeroMQ between the API
servers and the workers (`fast_queue`, "for > 100 RPS"), and dynamic batching of concurrent
requests (`max_batch_size`, `batch_timeout`). Validation, encoding and answers are nnserve's
(loadtests/peers/common.py).

    python loadtests/peers/litserve_app.py --port PORT --workers N
"""

from __future__ import annotations

import litserve as ls
from common import TABULAR, TabularModel, command_line  # noqa: I001 - the script's own folder, not a package
from fastapi import HTTPException
from pydantic import ValidationError


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
            raise HTTPException(status_code=422, detail=e.errors(include_url=False, include_context=False)) from None

    def batch(self, inputs: list[dict]) -> list[dict]:
        return inputs

    def predict(self, rows: list[dict]) -> list[dict]:
        return self.served.predict(rows)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


if __name__ == "__main__":
    args = command_line()
    server = ls.LitServer([Tabular(name) for name in TABULAR], accelerator="cpu", workers_per_device=args.workers,
                          fast_queue=True, timeout=30)  # fmt: skip
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)
