"""Held-out metrics against scikit-learn's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, mean_absolute_error, r2_score, roc_auc_score

from service.measures import calibration_error, classification_metrics, regression_metrics, topk_accuracy


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.uniform(1e5, 1e6, 500)
    p = y * rng.normal(1, 0.1, 500)
    m = regression_metrics(y, p)
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["median_ape"] == pytest.approx(np.median(np.abs(p - y) / y))


def test_classification_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.random(5_000) < 0.05
    p = np.round(np.clip(0.05 + 0.1 * y + rng.normal(0, 0.05, 5_000), 0.001, 0.999), 2)  # many ties
    m = classification_metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p))


def test_calibration_error_is_zero_for_true_probabilities_and_not_for_biased_ones():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.01, 0.1, 400_000)
    y = rng.random(len(p)) < p
    assert calibration_error(y, p) < 0.002
    assert calibration_error(y, p * 1.5) > 0.02


def test_topk_accuracy():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    assert topk_accuracy(np.array([1, 1]), scores, ks=(1, 2)) == {"top1": 0.5, "top2": 1.0}
