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
    """The committed graph is the final fit on every labelled sale (the validation score is the first
    fit's, which chose the epoch): it reproduces the card's `final_fit` on those sales."""
    model = load_model(MODELS / "housing-price")
    train, val = split_by_date(load_housing(HOUSING_CSV))
    every = train.concat(val)
    assert model.card.data.rows == {"train": len(train), "validation": len(val), "final_fit": len(every)}
    prices = model.run(every.numeric, every.categorical)
    _close(regression_metrics(every.extra["price"], prices), model.card.metrics["final_fit"])
    assert model.card.metrics["model"]["r2"] < model.card.metrics["final_fit"]["r2"]  # held out vs seen


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


def test_the_housing_reference_is_made_again_from_the_data_its_card_names():
    """training.reference rebuilds a card's drift reference from its data and config: for the refit model,
    every labelled sale both ways, as the trainer wrote it."""
    from training.reference import backfill

    card = read_card(MODELS / "housing-price")
    again = backfill(MODELS / "housing-price")
    assert (again.features_from, again.outputs_from) == (card.reference.features_from, card.reference.outputs_from)
    assert [d.fractions for d in again.distributions] == [d.fractions for d in card.reference.distributions]
