"""The distributions a card's reference holds, which the service measures drift against
(service/dataplane/drift.py): made by the trainers from their own data (and by training.reference for
cards made before).

Features on the training split (what the model learnt from: a 1,000,000-row sample where it is larger),
outputs on the validation split (what the model answers on data it did not see), binned as the
service bins live rows, by the same function (service.dataplane.drift.bin_of):

- numbers: by deciles, a value that holds 5% of the rows or more in a bin of its own; a number with at
  most 20 distinct values (counts, flags, grades) gets one bin per value, so a shift between two shows;
- codes (closed vocabularies, IDs, predicted classes): the 20 most frequent codes, one bin each, then
  one bin for every other code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.cards import CategoricalCard, Distribution, NumericCard, ReferenceCard
from service.dataplane.drift import bin_of

QUANTILES = 10
DISTINCT_AS_BINS = 20
TOP_CODES = 20
SAMPLE = 1_000_000


def numbers(name: str, kind: str, values: np.ndarray) -> Distribution:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    distinct = np.unique(finite)
    if len(distinct) <= DISTINCT_AS_BINS:
        edges = distinct[1:]  # bin i: distinct[i] alone
    else:  # deciles; a value holding a twentieth of the rows or more (0 for "never renovated") gets its own bin
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, QUANTILES + 1)[1:-1]))
        heavy = [e for e in edges if np.mean(finite == e) >= 1 / (2 * QUANTILES)]
        edges = np.unique(np.concatenate([edges, np.nextafter(heavy, np.inf)]))
    return _fill(Distribution(name=name, kind=kind, edges=[float(e) for e in edges], fractions=[]), values)


def codes(name: str, kind: str, values: np.ndarray) -> Distribution:
    found, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    top = found[np.argsort(-counts, kind="stable")[:TOP_CODES]]
    return _fill(Distribution(name=name, kind=kind, codes=[int(c) for c in top], fractions=[]), values)


def _fill(d: Distribution, values: np.ndarray) -> Distribution:
    counts = np.bincount(bin_of(d, values), minlength=d.bins())
    return d.model_copy(update={"fractions": [round(float(c), 6) for c in counts / max(1, len(values))]})


def tabular(
    numeric_cards: Sequence[NumericCard],
    numeric: np.ndarray,
    categorical_cards: Sequence[CategoricalCard],
    categorical: np.ndarray,
    outputs: np.ndarray,
    features_from: str,
    outputs_from: str,
    seed: int = 0,
) -> ReferenceCard:
    """A table model's reference: each feature (graph input columns: numbers as the graph takes them,
    codes as positions or buckets), then its output, in the order the service tracks them."""
    rows = len(numeric)
    if rows > SAMPLE:
        pick = np.sort(np.random.default_rng(seed).choice(rows, SAMPLE, replace=False))
        numeric, categorical = numeric[pick], categorical[pick]
        features_from += f" (a random {SAMPLE:,} of its {rows:,} rows)"
    distributions = [
        numbers(c.name, "time" if c.date else "feature", numeric[:, j]) for j, c in enumerate(numeric_cards)
    ]
    distributions += [codes(c.name, "feature", categorical[:, j]) for j, c in enumerate(categorical_cards)]
    distributions.append(numbers("output", "output", np.asarray(outputs).reshape(-1)))
    return ReferenceCard(features_from=features_from, outputs_from=outputs_from, distributions=distributions)


def image(probabilities: np.ndarray, outputs_from: str) -> ReferenceCard:
    """A classifier's reference: its top-1 confidence and its predicted classes on held-out photos."""
    return ReferenceCard(
        features_from="none: a photo's pixels are not tracked",
        outputs_from=outputs_from,
        distributions=[
            numbers("top1_confidence", "output", probabilities.max(axis=1)),
            codes("predicted_class", "output", probabilities.argmax(axis=1)),
        ],
    )
