"""Seldon MLServer serving the tabular models by the V2 (Open Inference Protocol) JSON form its docs use
for tables: one input per column, decoded by its pandas codec, with a custom runtime (`MLModel`) per
model and `parallel_workers` one per core (its inference pool). Validation, encoding and answers are
nnserve's (loadtests/peers/common.py); the answer goes back as V2 outputs, one per field.

    python loadtests/peers/mlserver_app.py --port PORT --workers N    (writes its settings, runs `mlserver start`)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from common import TABULAR, TabularModel, command_line  # noqa: I001 - the script's own folder, not a package
from mlserver import MLModel
from mlserver.codecs import PandasCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from pydantic import ValidationError


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
        answer = self.served.predict(rows)[0]
        fields = {**answer, "warnings": json.dumps(answer["warnings"])}
        outputs = [ResponseOutput(name=k, shape=[1], datatype="FP64" if isinstance(v, float) else "BYTES", data=[v])
                   for k, v in fields.items()]  # fmt: skip
        return InferenceResponse(model_name=self.name, outputs=outputs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    args = command_line()
    root = Path(tempfile.mkdtemp(prefix="mlserver-"))
    settings = {"http_port": args.port, "grpc_port": _free_port(), "metrics_port": _free_port(),
                "parallel_workers": args.workers, "host": "127.0.0.1"}  # fmt: skip
    (root / "settings.json").write_text(json.dumps(settings))
    for name in TABULAR:
        (root / name).mkdir()
        (root / name / "model-settings.json").write_text(
            json.dumps({"name": name, "implementation": "mlserver_app.Tabular"})
        )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    sys.exit(subprocess.run([str(Path(sys.executable).with_name("mlserver")), "start", str(root)], env=env).returncode)
