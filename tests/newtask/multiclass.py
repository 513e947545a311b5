"""Multi-class classification of a table row: the card's features in, one of the card's labels out.

The graph takes a tabular model's two inputs (numeric float32 [N, features], categorical int64 [N,
features]: the tabular encoder makes them from the card) and returns class probabilities [N, labels].
One request answers the most likely label and every label's probability. Outcome feedback takes the
true label; its measures are top-1 accuracy and log loss. Drift tracks the features and the
predicted class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, create_model

from service.errors import InvalidInput, field_error
from service.tasks.base import Action, Prediction, Served
from service.tasks.tabular.adapter import Tabular
from service.tasks.tabular.types import FieldWarning, tabular_types


class MultiClassification(Tabular):
    task = "multiclass_classification"

    def check(self) -> None:
        card = self.model.card
        self.check_features()
        if len(card.outputs) != 1 or card.outputs[0].shape != ["N", len(card.labels)] or len(card.labels) < 2:
            raise self.fail(f"a {self.task} model has one output [N, labels] and 2 labels or more")
        self.types = tabular_types(card, self.settings.max_batch_rows)
        name = "".join(part.capitalize() for part in card.name.split("-"))
        labels = {"label": (str, Field(description=f"The most likely of {card.labels}.")),
                  "probabilities": (dict[str, float], Field(description="Each label's probability.")),
                  "warnings": (list[FieldWarning], Field(default_factory=list))}  # fmt: skip
        self.answer_type = create_model(f"{name}Prediction", __base__=Served, **labels)
        row = create_model(f"{name}Row", **labels)
        self.batch_type = create_model(f"{name}Batch", __base__=Served, predictions=(list[row], ...))  # type: ignore[valid-type]

    def actions(self) -> list[Action]:
        method = self.name.replace("-", "_")
        return [Action("predict", method, "Classify one row.", self.answer_type, request=self.types.row),
                Action("predict-batch", f"{method}_batch", "Classify rows.", self.batch_type,
                       request=self.types.batch)]  # fmt: skip

    async def predict(self, action: str, request: Any) -> Prediction:
        batch = action == "predict-batch"
        rows = [r.__dict__ for r in getattr(request, self.types.batch_field)] if batch else [request.__dict__]
        (probabilities, warnings), parts = await self.compute(rows)
        labels = self.model.card.labels
        answers = [{"label": labels[int(np.argmax(p))], "probabilities": dict(zip(labels, map(float, p), strict=True)),
                    "warnings": w} for p, w in zip(probabilities, warnings, strict=True)]  # fmt: skip
        answer = {**self.served, "predictions": answers} if batch else {**self.served, **answers[0]}
        top = [a["label"] for a in answers]
        return Prediction(answer, rows, top, parts, rows, (probabilities, warnings))

    async def compute(self, rows: list[dict[str, Any]]) -> tuple[Any, tuple[np.ndarray, ...]]:
        numeric, codes, warnings = self.encoder.encode(rows)
        inputs, out = await self.run(lambda: (numeric, codes))
        return (out, warnings), (*inputs, out)

    def differences(self, live: Any, shadow: Any) -> tuple[str, list[float]]:
        return "top1_agreement", [float(a == b) for a, b in zip(live[0].argmax(1), shadow[0].argmax(1), strict=True)]

    def drift_names(self) -> list[str]:
        card = self.model.card
        return [f.name for f in card.numeric] + [f.name for f in card.categorical] + ["predicted_class"]

    def drift_columns(self, parts: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        numeric, codes, probabilities = parts
        return [*numeric.T, *codes.T, probabilities.argmax(axis=1)]

    def smoke(self) -> None:
        example = self.types.row.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
        numeric, codes, _ = self.encoder.encode([self.types.row.model_validate(example, strict=False).__dict__])
        p = self.model.run(numeric, codes)[0]
        if not (np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-3):
            raise self.fail(f"smoke prediction on the card's example row gave {p}")

    def check_outcome(self, outcome: Any, loc: list[str | int]) -> None:
        if outcome not in self.model.card.labels:
            expected = f"one of {self.model.card.labels}"
            raise InvalidInput(f"{loc[0]}: expected {expected}", [field_error(loc, expected, outcome, "outcome")])

    def measures(self, outputs: list[Any], outcomes: list[Any]) -> dict[str, float | int | None]:
        return {"rows": len(outputs), "top1": float(np.mean([p == o for p, o in zip(outputs, outcomes, strict=True)]))}
