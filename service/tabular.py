"""Request rows -> the graph's two tensors, with a warning for every value the model has not seen.

Unseen categorical codes are not errors: the graph sends them to the unknown bucket; the warning
says so. Numbers inside the allowed range but outside the range seen in training are served too,
with a warning that the model is extrapolating.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.cards import ModelCard
from service.contract import TabularSpec
from service.schemas import FieldWarning


class TabularEncoder:
    def __init__(self, spec: TabularSpec, card: ModelCard) -> None:
        self.numeric = [(f.name, f.observed, f.boolean) for f in card.numeric]
        self.categorical = [
            (f.name, frozenset(f.vocabulary), spec_f.code, spec_f.values is not None)
            for f, spec_f in zip(card.categorical, spec.categorical, strict=True)
        ]

    def encode(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[list[FieldWarning]]]:
        numeric = np.empty((len(rows), len(self.numeric)), dtype=np.float32)
        codes = np.empty((len(rows), len(self.categorical)), dtype=np.int64)
        warnings: list[list[FieldWarning]] = []
        for r, row in enumerate(rows):
            found: list[FieldWarning] = []
            for j, (name, (lo, hi), boolean) in enumerate(self.numeric):
                value = row[name]
                numeric[r, j] = float(value)
                if not boolean and not lo <= value <= hi:
                    found.append(FieldWarning(
                        field=name, value=value,
                        message=f"{name} {value:g} is outside the range seen in training ({lo:g} to {hi:g}): "
                        "the model is extrapolating",
                    ))  # fmt: skip
            for j, (name, vocabulary, to_code, closed) in enumerate(self.categorical):
                value = row[name]
                codes[r, j] = code = to_code(value)
                if code not in vocabulary:
                    what = "value" if closed else "ID"
                    found.append(FieldWarning(
                        field=name, value=value,
                        message=f"{name} {value}: {what} not seen in training, served through the unknown bucket",
                    ))  # fmt: skip
            warnings.append(found)
        return numeric, codes, warnings
