"""KServe's Python model server (the `kserve` package, what an InferenceService's custom predictor
runs) serving nnserve's models by its v1 protocol, as its docs set one up: a `kserve.Model` per
model, `ModelServer(workers=...)` one uvicorn worker per core. Rows are `instances` (a batch: many);
a photo is an instance {"image": {"b64": ...}}, the form of KServe's image examples. Validation,
encoding, decoding and answers are nnserve's (loadtests/peers/common.py); a request that does not
validate is KServe's InvalidInput (400).

    python loadtests/peers/kserve_app.py --port PORT --workers N
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import kserve
from common import TABULAR, TAGGER, ImageModel, TabularModel, command_line  # noqa: I001 - the script's folder
from kserve.errors import InvalidInput
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

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        try:
            rows = [self.served.validate(row) for row in payload["instances"]]
        except ValidationError as e:
            raise InvalidInput(str(e)) from None
        return {"predictions": self.served.predict(rows)}


class Tagger(Served):
    def load_served(self) -> ImageModel:
        return ImageModel(self.name)

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        try:
            photos = [base64.b64decode(i["image"]["b64"], validate=True) for i in payload["instances"]]
        except (KeyError, TypeError, binascii.Error) as e:
            raise InvalidInput(f"instances: each {{'image': {{'b64': <photo>}}}}: {e}") from None
        return {"predictions": [self.served.tag(photo) for photo in photos]}


if __name__ == "__main__":
    args = command_line()
    kserve.ModelServer(http_port=args.port, workers=args.workers, enable_grpc=False).start(
        [Tabular(name) for name in TABULAR] + ([Tagger(TAGGER)] if TAGGER else [])
    )
