"""The click bars' statistical error (training/intervals.py): DeLong's standard error agrees with a
bootstrap, the calibration noise is what calibrated models show, and the bars pass an honest model on a
small held-out split but fail a broken one."""

from __future__ import annotations

import numpy as np
import pytest

from service.measures import calibration_error, roc_auc
from training.intervals import auc_difference, calibration_noise


def _scored(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities p (a 4% click rate), and two noisy scorings of them."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-3.4, 0.8, n)
    p = 1 / (1 + np.exp(-logit))
    y = rng.random(n) < p
    a = logit + rng.normal(0, 0.5, n)
    b = logit + rng.normal(0, 0.8, n)
    return y, p, a, b


def test_delong_gives_the_rank_auc_and_a_standard_error_a_bootstrap_agrees_with():
    y, _, a, b = _scored(4_000, seed=1)
    auc_a, auc_b, se = auc_difference(y, a, b)
    assert auc_a == pytest.approx(roc_auc(y, a)) and auc_b == pytest.approx(roc_auc(y, b))
    rng = np.random.default_rng(2)
    boot = []
    for _ in range(400):
        i = rng.integers(0, len(y), len(y))
        boot.append(roc_auc(y[i], a[i]) - roc_auc(y[i], b[i]))
    assert se == pytest.approx(np.std(boot), rel=0.2)
    assert auc_difference(y, a, a)[2] == pytest.approx(0.0, abs=1e-12)  # the same scores: no difference at all


def test_a_calibrated_model_stays_within_the_noise_95_times_in_100():
    _, p, _, _ = _scored(1_500, seed=3)
    limit = calibration_noise(p)
    rng = np.random.default_rng(4)
    within = np.mean([calibration_error(rng.random(len(p)) < p, p) <= limit for _ in range(400)])
    assert 0.9 <= within <= 0.995, within
    assert limit > 0.01  # on 1,500 rows a fixed 0.01 would fail a perfect model most of the time
    assert calibration_noise(np.resize(p, 400_000)) < 0.005  # and on many rows the fixed bar binds


def test_the_bars_pass_an_honest_model_on_a_small_split_and_fail_a_broken_one():
    from training.train_clicklog import bar_checks

    y, p, a, b = _scored(1_500, seed=5)
    honest = 1 / (1 + np.exp(-a))  # calibrated enough, a little better than b
    baseline = 1 / (1 + np.exp(-b))
    assert all(bar_checks(y, p, baseline).values())  # the truth itself
    assert all(bar_checks(y, honest, baseline).values())
    constant = np.full(len(y), y.mean())  # calibrated on average, ranks nothing
    assert list(bar_checks(y, constant, baseline).values()) == [False, True]
    doubled = np.clip(p * 2, 0, 1)  # ranks as the truth does, probabilities twice too high
    assert list(bar_checks(y, doubled, baseline).values()) == [True, False]
