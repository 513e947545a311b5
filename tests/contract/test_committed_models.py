"""The committed models agree with the contract and their graphs, and reproduce their cards' metrics
on the held-out data, run through onnxruntime exactly as the service runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.cards import read_card
from service.measures import classification_metrics, regression_metrics, topk_accuracy
from service.runtime import load_model
from tests.conftest import CIFAR_VAL, HOUSING_CSV, MODELS
from training.data_adclick import generate
from training.data_cifar import load_cifar_tar
from training.data_housing import load_housing, split_by_date
from training.export import CURVES_FILE

OURS = ["housing-price", "ad-click", "image-tagging"]


@pytest.mark.parametrize("name", OURS)
def test_model_dir_loads_and_its_bar_held(name):
    model = load_model(MODELS / name)  # sha256, signature and contract checks live in the loader
    assert model.card.name == name
    assert model.card.bar["checks"] and all(model.card.bar["checks"].values()), model.card.bar
    assert (MODELS / name / CURVES_FILE).stat().st_size > 5_000
    assert model.card.parity.max_abs_diff <= model.card.parity.tolerance


def _close(reproduced: dict[str, float], card_metrics: dict[str, float]) -> None:
    for metric, value in card_metrics.items():
        assert reproduced[metric] == pytest.approx(value, rel=1e-4, abs=1e-6), metric


def test_housing_reproduces_its_card():
    model = load_model(MODELS / "housing-price")
    _, val = split_by_date(load_housing(HOUSING_CSV))
    assert model.card.data.rows["validation"] == len(val)
    _close(regression_metrics(val.extra["price"], model.run(val.numeric, val.categorical)), model.card.metrics["model"])


def test_adclick_reproduces_its_card():
    model = load_model(MODELS / "ad-click")
    config = model.card.training["config"]
    imp = generate(config["impressions"], config["seed"])
    cut = int(len(imp) * (1 - config["holdout"]))  # generated impressions come in time order
    y, p_true = imp.clicked[cut:], imp.p_true[cut:]
    p = model.run(imp.numeric[cut:], imp.categorical[cut:])
    _close(classification_metrics(y, p), model.card.metrics["model"])
    _close(classification_metrics(y, p_true), model.card.metrics["oracle"])


def test_tagger_reproduces_its_card():
    model = load_model(MODELS / "image-tagging")
    x, y = load_cifar_tar(CIFAR_VAL)
    probs = np.concatenate([model.run(x[i : i + 500]) for i in range(0, len(x), 500)])
    _close(topk_accuracy(y, probs), model.card.metrics["model"])


def test_card_records_its_data_and_environment():
    for name in OURS:
        card = read_card(MODELS / name)
        assert card.data is not None and all(len(f["sha256"]) == 64 for f in card.data.files)
        assert set(card.training["versions"]) >= {"torch", "onnx", "onnxruntime", "python"}
        assert "config" in card.training and card.training["duration_s"] > 0
        assert Path(MODELS / name / "model.onnx").stat().st_size < 20 * 1024 * 1024
