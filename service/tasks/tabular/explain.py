"""Shapley values for a table row, computed with the served graph alone (no torch, no shap): which
request fields moved the answer away from the baseline, in the answer's own unit.

A feature is a player (a categorical or an ID is one player, whatever its encoding). The value of a
coalition S is the model's mean answer over the background rows with the features in S taken from the
explained row (interventional Shapley values, as shap's explainers compute them on a background set).
The background is drawn from the card's reference distributions (the training data's marginals,
service/cards.py: Distribution), so the baseline is the model's mean answer on typical inputs; a card
without a reference uses its features' defaults (or examples) as the one background row.

Exact values when every coalition fits NNSERVE_EXPLAIN_MAX_ROWS (2^features x background rows);
otherwise antithetic permutation sampling, as many permutations as fit (at most
NNSERVE_EXPLAIN_PERMUTATIONS), with each value's standard error. Either way the values add up to the
prediction minus the baseline: every permutation's contributions telescope to exactly that. All of a
request's coalition rows go to onnxruntime in large runs, never a run per coalition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.cards import Distribution, ModelCard

CHUNK = 65_536  # graph rows per onnxruntime run


@dataclass(frozen=True)
class Plan:
    """How one row is explained: the coalitions (as feature masks) whose values are needed."""

    masks: np.ndarray  # bool [coalitions, features]
    exact: bool
    permutations: int  # sampled: the permutations, each M + 1 consecutive coalitions of `masks`


def background(card: ModelCard, rows: int, numeric_dtype: type) -> tuple[np.ndarray, np.ndarray, str]:
    """Background rows (numbers and codes as the encoder makes them), drawn by stratified quantiles from
    each feature's reference distribution, each feature's column shuffled on its own (independent
    marginals); and what they were drawn from, for the answer."""
    distributions = {d.name: d for d in card.reference.distributions} if card.reference else {}
    numeric = np.empty((rows, len(card.numeric)), dtype=numeric_dtype)
    codes = np.empty((rows, len(card.categorical)), dtype=np.int64)
    rng = np.random.default_rng(0)
    positions = (np.arange(rows) + 0.5) / rows
    for j, f in enumerate(card.numeric):
        d = distributions.get(f.name)
        values, weights = (_numbers(d, f.observed, f.integer or f.boolean) if d is not None
                           else ([_default(f.default, f.example)], [1.0]))  # fmt: skip
        numeric[:, j] = rng.permutation(_draw(values, weights, positions))
    for j, f in enumerate(card.categorical):
        d = distributions.get(f.name)
        if d is not None and d.codes:  # the most frequent codes (the "every other code" bin left out)
            values, weights = list(d.codes), d.fractions[: len(d.codes)]
        else:
            fallback = f.default if f.default is not None else f.example
            values = [f.values.index(str(fallback)) if f.values is not None else int(fallback)]  # type: ignore[arg-type]
            weights = [1.0]
        codes[:, j] = rng.permutation(_draw(values, weights, positions))
    source = (f"{rows} rows drawn from the card's reference distributions ({card.reference.features_from})"
              if card.reference else "the features' defaults (the card has no reference distributions)")  # fmt: skip
    return numeric, codes, source


def _numbers(d: Distribution, observed: tuple[float, float], whole: bool) -> tuple[list[float], list[float]]:
    """A numeric reference as (value, weight) pairs. A whole-numbered feature's bins start at a value it
    takes (binned value by value, or deciles of whole numbers): each bin at its lower edge (the observed
    minimum for the first). A continuous one's bins are deciles: each at its middle, the last, open above,
    at its lower edge."""
    lows = [observed[0], *(d.edges or [])]
    if whole or len(lows) < 2:
        return lows, list(d.fractions)
    middles = [(a + b) / 2 for a, b in zip(lows, lows[1:], strict=False)] + [lows[-1]]
    return middles, list(d.fractions)


def _default(default: Any, example: Any) -> float:
    value = default if default is not None else example
    return float(value) if not isinstance(value, str) else 0.0


def _draw(values: list[float], weights: list[float], positions: np.ndarray) -> np.ndarray:
    total = np.cumsum(np.asarray(weights, dtype=np.float64))
    if total[-1] <= 0:
        return np.full(len(positions), values[0])
    index = np.searchsorted(total / total[-1], positions, side="right")
    return np.asarray(values)[np.minimum(index, len(values) - 1)]


def plan(players: int, rows: int, max_rows: int, max_permutations: int, seed: int) -> Plan | None:
    """Exact when 2^players coalitions of `rows` background rows fit `max_rows`; else as many antithetic
    permutations as fit; None when not even one pair does (the caller answers 413)."""
    if (1 << players) * rows <= max_rows:
        every = (np.arange(1 << players)[:, None] >> np.arange(players)) & 1
        return Plan(every.astype(bool), True, 0)
    pairs = min(max_permutations, max_rows // ((players + 1) * rows)) // 2
    if pairs < 1:
        return None
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(players) for _ in range(pairs)]
    orders = [o for order in orders for o in (order, order[::-1])]  # antithetic: each order and its reverse
    masks = np.zeros((len(orders) * (players + 1), players), dtype=bool)
    for p, order in enumerate(orders):
        for i in range(1, players + 1):
            masks[p * (players + 1) + i, order[:i]] = True
    return Plan(masks, False, len(orders))


def coalition_rows(
    masks: np.ndarray, numeric: np.ndarray, codes: np.ndarray, bg_numeric: np.ndarray, bg_codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every coalition with every background row: the explained row's values where the mask is set."""
    width = numeric.shape[1]
    take_numeric, take_codes = masks[:, None, :width], masks[:, None, width:]
    rows_numeric = np.where(take_numeric, numeric[None, :, :], bg_numeric[None, :, :]).reshape(-1, width)
    rows_codes = np.where(take_codes, codes[None, :, :], bg_codes[None, :, :]).reshape(-1, codes.shape[1])
    return rows_numeric, rows_codes


def shapley(plan_: Plan, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Coalition values (one per mask, in the plan's order) -> one Shapley value per player, and their
    standard errors when sampled."""
    masks, players = plan_.masks, plan_.masks.shape[1]
    if plan_.exact:
        index = masks.astype(np.int64) @ (1 << np.arange(players))
        value = np.empty(1 << players)
        value[index] = values
        sizes = masks.sum(1)
        weight = np.array([math.factorial(s) * math.factorial(players - s - 1) / math.factorial(players)
                           for s in range(players)])  # fmt: skip
        phi = np.empty(players)
        for j in range(players):
            without = index[~masks[:, j]]
            phi[j] = np.sum(weight[sizes[~masks[:, j]]] * (value[without | (1 << j)] - value[without]))
        return phi, None
    chains = values.reshape(plan_.permutations, players + 1)
    steps = np.diff(chains, axis=1)  # each order's contribution of the player it added
    contributions = np.zeros((plan_.permutations, players))
    for p in range(plan_.permutations):
        added = [int(np.flatnonzero(masks[p * (players + 1) + i] & ~masks[p * (players + 1) + i - 1])[0])
                 for i in range(1, players + 1)]  # fmt: skip
        contributions[p, added] = steps[p]
    pairs = contributions.reshape(-1, 2, players).mean(1)  # an order and its reverse: one sample
    error = pairs.std(0, ddof=1) / math.sqrt(len(pairs)) if len(pairs) > 1 else np.full(players, np.nan)
    return contributions.mean(0), error
