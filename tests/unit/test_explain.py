"""Shapley values as service/tasks/tabular/explain.py computes them, on functions whose values are known:
the exact ones equal a brute-force sum over coalitions, the sampled ones agree with them within their
stated standard errors, and both add up to the prediction minus the baseline."""

from __future__ import annotations

import itertools
import math

import numpy as np

from service.tasks.tabular import explain


def _f(numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A model with interactions: x0 x1 + 2 x2 + sin(x3) + x4 x5 x6 + a per-code effect (8 players)."""
    x = numeric
    effect = np.array([0.0, 1.5, -2.0])[codes[:, 0]]
    return x[:, 0] * x[:, 1] + 2 * x[:, 2] + np.sin(x[:, 3]) + x[:, 4] * x[:, 5] * x[:, 6] + effect


def _values(plan: explain.Plan, numeric, codes, bg_numeric, bg_codes) -> np.ndarray:
    rows_numeric, rows_codes = explain.coalition_rows(plan.masks, numeric, codes, bg_numeric, bg_codes)
    return _f(rows_numeric, rows_codes).reshape(len(plan.masks), -1).mean(1)


def _brute_force(numeric, codes, bg_numeric, bg_codes) -> np.ndarray:
    players = numeric.shape[1] + codes.shape[1]

    def value(coalition: set[int]) -> float:
        mask = np.array([[j in coalition for j in range(players)]])
        rows_numeric, rows_codes = explain.coalition_rows(mask, numeric, codes, bg_numeric, bg_codes)
        return float(_f(rows_numeric, rows_codes).mean())

    phi = np.zeros(players)
    for j in range(players):
        others = [k for k in range(players) if k != j]
        for size in range(players):
            for s in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(players - size - 1) / math.factorial(players)
                phi[j] += weight * (value({*s, j}) - value(set(s)))
    return phi


def _case(seed: int):
    rng = np.random.default_rng(seed)
    bg_numeric, bg_codes = rng.normal(size=(12, 7)), rng.integers(0, 3, size=(12, 1))
    return rng.normal(size=(1, 7)), rng.integers(0, 3, size=(1, 1)), bg_numeric, bg_codes


def test_exact_values_are_the_brute_force_sum_and_add_up_to_prediction_minus_baseline():
    for seed in range(3):
        numeric, codes, bg_numeric, bg_codes = _case(seed)
        plan = explain.plan(8, len(bg_numeric), 1 << 20, 64, seed=0)
        assert plan is not None and plan.exact
        values = _values(plan, numeric, codes, bg_numeric, bg_codes)
        phi, error = explain.shapley(plan, values)
        assert error is None and np.allclose(phi, _brute_force(numeric, codes, bg_numeric, bg_codes), atol=1e-12)
        prediction, baseline = _f(numeric, codes)[0], _f(bg_numeric, bg_codes).mean()
        assert math.isclose(phi.sum(), prediction - baseline, rel_tol=1e-9, abs_tol=1e-12)


def test_sampled_values_agree_with_the_exact_ones_within_their_stated_errors():
    z = []
    for seed in range(40):
        numeric, codes, bg_numeric, bg_codes = _case(seed)
        exact = explain.plan(8, 12, 1 << 20, 64, seed=0)
        sampled = explain.plan(8, 12, 12 * 9 * 16, 64, seed=seed)  # room for 16 permutations, not 2^8 coalitions
        assert exact is not None and sampled is not None and not sampled.exact and sampled.permutations == 16
        truth, _ = explain.shapley(exact, _values(exact, numeric, codes, bg_numeric, bg_codes))
        estimate, error = explain.shapley(sampled, _values(sampled, numeric, codes, bg_numeric, bg_codes))
        prediction, baseline = _f(numeric, codes)[0], _f(bg_numeric, bg_codes).mean()
        assert math.isclose(estimate.sum(), prediction - baseline, rel_tol=1e-9, abs_tol=1e-9)  # always exact
        moving = error > 1e-12  # every sampled pair the same: an error of 0 is a floor, not a measure
        z += list((estimate[moving] - truth[moving]) / error[moving])
    z = np.abs(np.array(z))
    assert len(z) > 100 and np.mean(z <= 2) > 0.9 and z.max() < 6, (np.mean(z <= 2), z.max())


def test_a_model_too_large_for_the_cap_has_no_plan():
    assert explain.plan(20, 256, 1024, 64, seed=0) is None
    assert explain.plan(3, 16, 1024, 64, seed=0).exact  # type: ignore[union-attr]
