"""Seldon MLServer serving nnserve's models by the V2 (Open Inference Protocol) JSON forms its docs use:
a table as one input per column, decoded by its pandas codec; a photo as a BYTES input in base64
(its base64 codec). A custom runtime (`MLModel`) per model and `parallel_workers` one per core (its
inference pool). Validation, encoding, decoding and answers are nnserve's (loadtests/peers/common.py);
the answer goes back as V2 outputs, one per field (lists as JSON text).

    python loadtests/peers/mlserver_app.py --port PORT --workers N    (writes its settings, runs `mlserver start`)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import TABULAR, TAGGER, ImageModel, TabularModel, command_line, free_port, v2_outputs  # noqa: I001 - the script's folder
from mlserver import MLModel
from mlserver.codecs import Base64Codec, PandasCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from pydantic import ValidationError


def outputs(answers: list[dict]) -> list[ResponseOutput]:
    return [ResponseOutput(**output) for output in v2_outputs(answers)]


class Tabular(MLModel):
    async def load(self) -> bool:
        self.served = TabularModel(self.name)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        frame = PandasCodec.decode_request(payload)
        try:
            rows = [self.served.validate({k: getattr(v, "item", lambda v=v: v)() for k, v in r.items()})
                    for r in frame.to_dict("records")]  # fmt: skip
        except ValidationError as e:
            raise MLServerError(str(e), status_code=422) from None
        return InferenceResponse(model_name=self.name, outputs=outputs(self.served.predict(rows)))


class Tagger(MLModel):
    async def load(self) -> bool:
        self.served = ImageModel(self.name)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        photos = Base64Codec.decode_input(payload.inputs[0])
        return InferenceResponse(model_name=self.name, outputs=outputs([self.served.tag(p) for p in photos]))


if __name__ == "__main__":
    args = command_line()
    root = Path(tempfile.mkdtemp(prefix="mlserver-"))
    settings = {"http_port": args.port, "grpc_port": free_port(), "metrics_port": free_port(),
                "parallel_workers": args.workers, "host": "127.0.0.1"}  # fmt: skip
    (root / "settings.json").write_text(json.dumps(settings))
    runtimes = {name: "mlserver_app.Tabular" for name in TABULAR} | ({TAGGER: "mlserver_app.Tagger"} if TAGGER else {})
    for name, implementation in runtimes.items():
        (root / name).mkdir()
        (root / name / "model-settings.json").write_text(json.dumps({"name": name, "implementation": implementation}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    sys.exit(subprocess.run([str(Path(sys.executable).with_name("mlserver")), "start", str(root)], env=env).returncode)
