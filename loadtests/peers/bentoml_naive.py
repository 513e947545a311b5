"""The baseline a BentoML user writes from BentoML's docs: a @bentoml.service class that loads the
models in __init__, one synchronous @bentoml.api per route taking the request's fields (`input_spec`,
the model's pydantic type; a photo as a `Path`, BentoML's file upload), `workers` one per core.
BentoML's own HTTP layer, validation errors and thread pool, nothing of nnserve's edge; the
encoding, decoding and answers are nnserve's (loadtests/peers/common.py), so the difference is the
serving layer.

    bentoml serve loadtests.peers.bentoml_naive:Naive --port PORT    (BENCH_WORKERS: workers)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import bentoml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TABULAR, TAGGER, ImageModel, TabularModel  # noqa: E402

TYPES = {name: TabularModel(name).types for name in TABULAR}  # the request types, for input_spec


def _apis(name: str) -> dict[str, Any]:
    """One model's two routes, as methods (BentoML takes them from the class body)."""

    def single(self: Any, **row: Any) -> dict:
        return self.models[name].predict([row])[0]

    def batch(self: Any, **request: Any) -> dict:
        return self.models[name].predict_batch([r.__dict__ for r in request[TYPES[name].batch_field]])

    method = name.replace("-", "_")
    single.__name__, batch.__name__ = method, f"{method}_batch"  # BentoML finds a method by its name
    return {
        method: bentoml.api(route=f"/v1/{name}/predict", input_spec=TYPES[name].row)(single),
        f"{method}_batch": bentoml.api(route=f"/v1/{name}/predict-batch", input_spec=TYPES[name].batch)(batch),
    }


class Naive:
    def __init__(self) -> None:
        self.models = {name: TabularModel(name) for name in TABULAR}
        self.tagger = ImageModel(TAGGER) if TAGGER else None

    @bentoml.api(route="/v1/image-tagging/predict")
    def image_tagging(self, photo: Path, top_k: int = 5) -> dict:
        assert self.tagger is not None
        return self.tagger.tag(photo.read_bytes(), top_k)


for _name in TABULAR:
    for _method, _api in _apis(_name).items():
        setattr(Naive, _method, _api)

Naive = bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "2")))(Naive)  # type: ignore[misc]
