"""A new task is one package and one registration line: multi-class classification of a table row
(tests/newtask/multiclass.py), registered here, a real model of it trained here on King County sales
(which third of prices a house sells in), and served on /v1 and /v2 with drift and outcome feedback,
nothing in service/ changed."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from service.cards import ModelCard, read_card, write_card
from service.settings import Settings
from service.tasks import ADAPTERS, register
from service.worker import standalone
from tests.conftest import HOUSING_CSV, MODELS
from tests.newtask.multiclass import MultiClassification
from training import distributions
from training.data_housing import load_housing, split_by_date
from training.export import export_onnx, graph_signature, onnx_facts

LABELS = ["lower third", "middle third", "upper third"]


class PriceBand(nn.Module):
    """Standardised numbers and an embedding of the ZIP code -> the three bands' probabilities."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.zip = nn.Embedding(200, 4)
        self.net = nn.Sequential(nn.Linear(13 + 4, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        zips = (categorical[:, 0] - 98000).clamp(0, 199)
        x = torch.cat([(numeric - self.mean) / self.std, self.zip(zips)], dim=1)
        return torch.softmax(self.net(x), dim=1)


@pytest.fixture(scope="module")
def band_models(tmp_path_factory):
    train, val = split_by_date(load_housing(HOUSING_CSV))
    cuts = np.quantile(train.extra["price"], [1 / 3, 2 / 3])
    bands = np.searchsorted(cuts, train.extra["price"])
    torch.manual_seed(0)
    net = PriceBand(train.numeric.mean(0), train.numeric.std(0) + 1e-6)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, c, y = torch.tensor(train.numeric), torch.tensor(train.categorical), torch.tensor(bands)
    for _ in range(15):
        for batch in torch.randperm(len(y)).split(256):
            loss = nn.functional.nll_loss(torch.log(net(x[batch], c[batch]) + 1e-9), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    folder = tmp_path_factory.mktemp("newtask") / "models" / "price-band"
    onnx_path = export_onnx(net, {"numeric": x[:2], "categorical": c[:2]}, "probabilities", folder)
    inputs, outputs = graph_signature(onnx_path)
    with torch.no_grad():
        predicted = net(torch.tensor(val.numeric), torch.tensor(val.categorical)).argmax(1).numpy()
    housing = read_card(MODELS / "housing-price")
    ref = distributions.tabular(housing.numeric, train.numeric, housing.categorical, train.categorical, predicted,
                            "training split", "validation split")  # fmt: skip
    tracked = [*ref.distributions[:-1], distributions.codes("predicted_class", "output", predicted)]
    accuracy = float(np.mean(predicted == np.searchsorted(cuts, val.extra["price"])))
    card = ModelCard(name="price-band", version="1", task="multiclass_classification", labels=LABELS,
                     description="Which third of King County prices a house sells in.", **onnx_facts(onnx_path),
                     inputs=inputs, outputs=outputs, numeric=housing.numeric, categorical=housing.categorical,
                     metrics={"model": {"top1": accuracy}},
                     reference=ref.model_copy(update={"distributions": tracked}))  # fmt: skip
    write_card(folder, card)
    return folder.parent, val, cuts, accuracy


def test_a_new_task_is_one_package_and_one_line(band_models, tmp_path):
    models, val, cuts, accuracy = band_models
    assert accuracy > 0.6  # a real model: three bands, much better than the third a guess gets
    register(MultiClassification)  # the one line
    try:
        app = standalone(Settings(models_dir=models, payload_log_dir=tmp_path / "payloads"))
        house = {"sqft_living": 3200, "bedrooms": 4, "zipcode": 98004, "grade": 10, "bathrooms": 3}

        async def scenario():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                one = await c.post("/v1/price-band/predict", json=house)
                cheap = {"sqft_living": 700, "bedrooms": 1, "zipcode": 98168, "grade": 5}
                many = await c.post("/v1/price-band/predict-batch", json={"rows": [house, cheap]})
                bad = await c.post("/v1/price-band/predict", json={**house, "bedrooms": "four"})
                oip = await c.post("/v2/models/price-band/infer", json={"inputs": [
                    {"name": "numeric", "shape": [1, 13], "datatype": "FP32",
                     "data": val.numeric[0].tolist()},
                    {"name": "categorical", "shape": [1, 1], "datatype": "INT64",
                     "data": val.categorical[0].tolist()}]})  # fmt: skip
                feedback = await c.post("/v1/price-band/feedback", json={
                    "request_id": one.headers["x-bentoml-request-id"], "outcome": "upper third"})  # fmt: skip
                many_id = many.headers["x-bentoml-request-id"]
                wrong = await c.post("/v1/price-band/feedback", json={"request_id": many_id, "outcomes": ["top", "x"]})
                drift = await c.get("/v1/models/price-band/drift")
                spec = await c.get("/docs.json")
            return one, many, bad, oip, feedback, wrong, drift, spec

        one, many, bad, oip, feedback, wrong, drift, spec = asyncio.run(scenario())
    finally:
        ADAPTERS.pop(MultiClassification.task)
    assert one.status_code == 200, one.text
    answer = one.json()
    assert answer["label"] == "upper third" and abs(sum(answer["probabilities"].values()) - 1) < 1e-5
    assert [p["label"] for p in many.json()["predictions"]] == ["upper third", "lower third"]
    assert bad.status_code == 400 and bad.json()["detail"][0]["loc"] == ["bedrooms"]
    assert oip.status_code == 200 and len(oip.json()["outputs"][0]["data"]) == 3
    assert feedback.status_code == 200 and feedback.json()["counted"]
    assert wrong.status_code == 400 and wrong.json()["detail"][0]["loc"] == ["outcomes", 0]
    figures = drift.json()["versions"]["1"]
    assert figures["rows"] == 4 and "predicted_class" in figures["distributions"]
    assert drift.json()["online"]["1"] == {"rows": 1, "top1": 1.0}
    assert "/v1/price-band/predict" in spec.json()["paths"] and "PriceBandPrediction" in json.dumps(spec.json())
