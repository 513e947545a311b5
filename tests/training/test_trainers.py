"""Each trainer's --dry-run end to end: data, a tiny epoch, export, parity, card, curves."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from service.cards import read_card
from service.runtime import load_model
from training import train_adclick, train_housing, train_tagger
from training.data_adclick import generate, write_csv
from training.export import CURVES_FILE


def _check_model_dir(out, name):
    card = read_card(out)
    assert card.name == name
    assert (out / CURVES_FILE).stat().st_size > 1_000
    assert card.parity is not None and card.parity.max_abs_diff <= card.parity.tolerance
    assert card.training["versions"]["torch"].startswith("2.13")
    model = load_model(out)  # the service's own loader accepts it
    assert model.provider == "CPUExecutionProvider"
    return card, model


def test_housing_dry_run(tmp_path):
    assert train_housing.main(["--dry-run", "--out", str(tmp_path)]) == 0
    card, model = _check_model_dir(tmp_path, "housing-price")
    assert card.data.rows == {"train": 500, "validation": 200}
    assert set(card.metrics) == {"model", "baseline"}
    price = model.run(np.array([[1800, 3, 2, 7500, 1, 0, 0, 3, 7, 1975, 0, 0]], np.float32), np.array([[98103]]))
    assert price.shape == (1, 1) and price[0, 0] > 0


def test_adclick_dry_run_generated(tmp_path):
    csv_path = tmp_path / "gen.csv"
    assert train_adclick.main(["--dry-run", "--out", str(tmp_path / "m"), "--generated-csv", str(csv_path)]) == 0
    card, _ = _check_model_dir(tmp_path / "m", "ad-click")
    assert set(card.metrics) == {"model", "baseline", "oracle"}
    assert card.data.files[0]["rows"] == 20_000 and csv_path.exists()


def test_adclick_dry_run_on_a_real_log_csv(tmp_path):
    log = write_csv(generate(5_000, seed=7), tmp_path / "real.csv")
    assert train_adclick.main(["--dry-run", "--data", str(log), "--out", str(tmp_path / "m")]) == 0
    card, _ = _check_model_dir(tmp_path / "m", "ad-click")
    assert card.data.files[0]["path"] == "real.csv"
    assert card.data.rows["train"] + card.data.rows["validation"] == 5_000


def test_tagger_dry_run(tmp_path):
    assert train_tagger.main(["--dry-run", "--out", str(tmp_path)]) == 0
    card, model = _check_model_dir(tmp_path, "image-tagging")
    assert card.image.size == (32, 32) and card.labels[3] == "cat"
    probs = model.run(np.zeros((2, 32, 32, 3), np.uint8))
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size"])
def test_config_flags_are_typed(flag, tmp_path):
    with pytest.raises(SystemExit):
        train_housing.main([flag, "many", "--out", str(tmp_path)])


def test_dry_run_is_deterministic(tmp_path):
    for run in ("a", "b"):
        assert train_housing.main(["--dry-run", "--out", str(tmp_path / run)]) == 0
    a = ort.InferenceSession(str(tmp_path / "a" / "model.onnx"))
    b = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"))
    feed = {
        "numeric": np.array([[1800, 3, 2, 7500, 1, 0, 0, 3, 7, 1975, 0, 0]], np.float32),
        "categorical": np.array([[98103]]),
    }
    assert a.run(None, feed)[0][0, 0] == b.run(None, feed)[0][0, 0]
