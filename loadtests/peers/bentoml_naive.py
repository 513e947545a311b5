"""The baseline a BentoML user writes from BentoML's docs: a @bentoml.service class that loads the
models in __init__, one synchronous @bentoml.api per model taking the request's fields (`input_spec`,
the model's pydantic type), `workers` one per core. BentoML's own HTTP layer, validation errors and
thread pool, nothing of nnserve's edge; the encoding and answers are nnserve's
(loadtests/peers/common.py), so the difference is the serving layer.

    bentoml serve loadtests.peers.bentoml_naive:Naive --port PORT    (BENCH_WORKERS: workers)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bentoml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TabularModel  # noqa: E402

HOUSING, AD_CLICK = TabularModel("housing-price"), TabularModel("ad-click")  # their types, for input_spec


@bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "2")))
class Naive:
    def __init__(self) -> None:
        self.models = {name: TabularModel(name) for name in ("housing-price", "ad-click")}

    @bentoml.api(route="/v1/housing-price/predict", input_spec=HOUSING.types.row)
    def housing_price(self, **row) -> dict:
        return self.models["housing-price"].predict([row])[0]

    @bentoml.api(route="/v1/ad-click/predict", input_spec=AD_CLICK.types.row)
    def ad_click(self, **row) -> dict:
        return self.models["ad-click"].predict([row])[0]
