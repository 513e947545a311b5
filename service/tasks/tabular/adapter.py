"""Regression and binary classification on a table row: the card's features in, one number out.

The graph takes `numeric` float32 [N, numeric features] and `categorical` int64 [N, categorical
features] (closed vocabularies as positions, IDs as they are) and returns one value per row, [N, 1]:
a regressor's prediction in its unit, or a classifier's probability. Its actions are `predict` (one row)
and `predict-batch`, with types built from the card (service/tasks/tabular/types.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import anyio
import numpy as np

from service import hashing as hashing_
from service.cards import TensorSpec
from service.errors import InvalidInput, PayloadTooLarge, field_error
from service.measures import calibration_error, log_loss, roc_auc
from service.tasks.base import Action, Adapter, Inputs, Prediction
from service.tasks.batching import Batcher
from service.tasks.tabular import explain
from service.tasks.tabular.encoder import TabularEncoder
from service.tasks.tabular.feeds import FeedError, Feeds
from service.tasks.tabular.types import TabularExplanation, TabularExplanationBatch, TabularTypes, tabular_types
from service.telemetry import batch_size_observer

EXPLAIN_SUMMARY = (
    "Explain one prediction: each field's share of the answer's distance from the baseline "
    "(Shapley values, in the answer's unit; a classifier's in probability and log-odds)."
)


class Tabular(Adapter):
    action_names = ("predict", "predict-batch", "explain", "explain-batch")

    def check(self) -> None:
        card = self.model.card
        self.check_features()
        if card.graph is None and (len(card.outputs) != 1 or card.outputs[0].shape != ["N", 1]):
            raise self.fail(f"a {card.task} model has one output [N, 1]; the graph has {_shapes(card.outputs)}")
        self.types: TabularTypes = tabular_types(card, self.settings.max_batch_rows)
        settings, players = self.settings, len(card.numeric) + len(card.categorical)
        self.background = explain.background(card, settings.explain_background_rows, self.encoder.dtype)
        self.plan = explain.plan(players, settings.explain_background_rows, settings.explain_max_rows,
                                 settings.explain_permutations, seed=0)  # fmt: skip

    def check_features(self) -> None:
        """The graph takes the card's features as the encoder makes them (our trainers' layout), or as the
        card's graph block maps them (a brought model: service/tasks/tabular/feeds.py); the encoder, from
        the card. A task on table rows with another output (a class among several, say) checks its
        output after this."""
        card = self.model.card
        self.feeds = self.check_graph() if card.graph is not None else None
        expected = [("float32", len(card.numeric)), ("int64", len(card.categorical))]
        got = [(t.dtype, t.shape[-1]) for t in card.inputs]
        if self.feeds is None and (got != expected or [t.shape[0] for t in card.inputs] != ["N", "N"]):
            raise self.fail(
                f"a {card.task} model takes numeric float32 [N, {len(card.numeric)}] and categorical int64 "
                f"[N, {len(card.categorical)}] as its card's features say; the graph takes {_shapes(card.inputs)}"
            )
        for f in card.categorical:
            if f.values is not None and tuple(f.allowed) != (0, len(f.values) - 1):
                raise self.fail(f"feature {f.name}: {len(f.values)} values but allowed codes {f.allowed}")
            hashing = f.hashing
            if hashing and (hashing.function, hashing.max_bytes) != (hashing_.FUNCTION, hashing_.MAX_ID_BYTES):
                raise self.fail(
                    f"feature {f.name} is hashed with {hashing.function} over {hashing.max_bytes} bytes; this "
                    f"service hashes with {hashing_.FUNCTION} over {hashing_.MAX_ID_BYTES}"
                )
            if hashing and tuple(f.allowed) != (0, hashing.buckets - 1):
                raise self.fail(f"feature {f.name}: {hashing.buckets} hash buckets but allowed codes {f.allowed}")
        read = {f.name for f in (*card.numeric, *card.categorical)}
        if card.api and (both := read & set(card.api.ignored_fields)):
            raise self.fail(f"api.ignored_fields names features the model reads: {sorted(both)}")
        # Numbers as the graph takes them: a graph of doubles gets doubles (float32 would round a latitude).
        doubles = any(t.dtype == "float64" for t in card.inputs)
        self.encoder = TabularEncoder(card, np.float64 if doubles else np.float32)
        self.served = {"model": self.name, "version": card.version}

    def check_graph(self) -> Feeds:
        """A brought graph's feeds, and its answer: a float output with the card's column."""
        card = self.model.card
        assert card.graph is not None
        try:
            feeds = Feeds(card)
        except FeedError as e:
            raise self.fail(str(e)) from None
        output = next(t for t in card.outputs if t.name == card.graph.output)  # the runtime checked it is there
        width = output.shape[1] if len(output.shape) == 2 else 1
        if output.dtype not in ("float32", "float64") or len(output.shape) not in (1, 2) or output.shape[0] != "N":
            raise self.fail(f"graph.output {output.name} is {output.dtype} {output.shape}: the answer is read "
                            "from a float tensor [N] or [N, k]")  # fmt: skip
        if not (isinstance(width, int) and 0 <= card.graph.column < width):
            raise self.fail(f"graph.column {card.graph.column}: output {output.name} {output.shape} has no such column")
        self.positions = [{v: i for i, v in enumerate(f.values)} if f.values is not None else None
                          for f in card.categorical]  # fmt: skip
        return feeds

    def graph_inputs(self, numeric: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, ...]:
        """The encoder's tensors as the graph takes them."""
        return (numeric, codes) if self.feeds is None else self.feeds.graph_inputs(numeric, codes)

    def answer(self, output: np.ndarray) -> np.ndarray:
        """The graph's output as [N, 1] answers."""
        return output if self.feeds is None else self.feeds.answer(output)

    def make_batcher(self) -> Batcher | None:
        """Requests already waiting share one run, in the event loop (the model takes tens of
        microseconds: a thread hop would cost more), never waiting for more. On 2 cores, one-row
        ad-click requests at 64 connections went from 5,231 to 7,201 requests/s (0.94x to 1.31x the
        plain Starlette reference) and a lone request still runs at once."""
        if self.settings.tabular_batch_max <= 1:
            return None
        return Batcher(self.model.run, self.settings.tabular_batch_max, inline=True,
                       observe=batch_size_observer(self.name))  # fmt: skip

    def actions(self) -> list[Action]:
        types, method = self.types, self.name.replace("-", "_")
        return [
            Action("predict", method, types.summary, types.prediction, request=types.row),
            Action(
                "predict-batch", f"{method}_batch", types.batch_summary, types.prediction_batch, request=types.batch
            ),
            Action("explain", f"{method}_explain", EXPLAIN_SUMMARY, TabularExplanation, request=types.row,
                   verb="explain"),
            Action("explain-batch", f"{method}_explain_batch", EXPLAIN_SUMMARY.replace("one", "each"),
                   TabularExplanationBatch, request=types.batch, verb="explain"),
        ]  # fmt: skip

    def features(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated rows without the fields a raw log line brings that the model does not read: they are
        neither run nor logged."""
        ignored = self.types.ignored
        return [{k: v for k, v in row.items() if k not in ignored} for row in rows] if ignored else rows

    async def predict(self, action: str, request: Any) -> Prediction:
        batch = action == "predict-batch"
        rows = self.features([r.__dict__ for r in getattr(request, self.types.batch_field)] if batch
                             else [request.__dict__])  # fmt: skip
        (values, warnings), parts = await self.compute(rows)
        output = self.types.output
        if batch:
            predictions = [{output: v, "warnings": w} for v, w in zip(values, warnings, strict=True)]
            answer = {**self.served, "predictions": predictions}
        else:
            answer = {**self.served, output: values[0], "warnings": warnings[0]}
        return Prediction(answer, rows, values, parts, rows, (values, warnings))

    async def explain(self, action: str, request: Any, picture: bool = False) -> dict[str, Any]:
        """Shapley values of each row's fields (service/tasks/tabular/explain.py), every row's coalitions run
        together in large onnxruntime runs, in a thread."""
        batch = action == "explain-batch"
        rows = self.features([r.__dict__ for r in getattr(request, self.types.batch_field)] if batch
                             else [request.__dict__])  # fmt: skip
        settings, plan = self.settings, self.plan
        if batch and len(rows) > settings.explain_max_batch:
            raise PayloadTooLarge(f"{len(rows)} rows to explain; at most {settings.explain_max_batch} in one request "
                                  "(NNSERVE_EXPLAIN_MAX_BATCH)")  # fmt: skip
        if plan is None:
            raise PayloadTooLarge(f"one explanation of this model's {self.plan_players} features needs more graph rows "
                                  f"than {settings.explain_max_rows} (NNSERVE_EXPLAIN_MAX_ROWS)")  # fmt: skip
        numeric, codes, warnings = self.encoder.encode(rows)
        answers = await anyio.to_thread.run_sync(self._explain_rows, numeric, codes)
        explained = [a | {"warnings": w} for a, w in zip(answers, warnings, strict=True)]
        return {**self.served, "explanations": explained} if batch else {**self.served, **explained[0]}

    def explanations(self) -> dict[str, Any] | None:
        plan, rows = self.plan, self.settings.explain_background_rows
        if plan is None:
            return {"method": "none: over NNSERVE_EXPLAIN_MAX_ROWS", "routes": []}
        method = "exact Shapley values" if plan.exact else f"Shapley values over {plan.permutations} permutations"
        return {"method": method, "graph_rows": len(plan.masks) * rows, "background_rows": rows,
                "background": self.background[2], "routes": ["explain", "explain-batch"]}  # fmt: skip

    @property
    def plan_players(self) -> int:
        return len(self.model.card.numeric) + len(self.model.card.categorical)

    def _explain_rows(self, numeric: np.ndarray, codes: np.ndarray) -> list[dict[str, Any]]:
        plan, (bg_numeric, bg_codes, source) = self.plan, self.background
        assert plan is not None
        parts = [explain.coalition_rows(plan.masks, numeric[r : r + 1], codes[r : r + 1], bg_numeric, bg_codes)
                 for r in range(len(numeric))]  # fmt: skip
        all_numeric = np.concatenate([p[0] for p in parts])
        all_codes = np.concatenate([p[1] for p in parts])
        outputs = np.concatenate([
            self.answer(self.model.run(*self.graph_inputs(all_numeric[i : i + explain.CHUNK],
                                                          all_codes[i : i + explain.CHUNK])))[:, 0]
            for i in range(0, len(all_numeric), explain.CHUNK)
        ]).astype(np.float64).reshape(len(numeric), len(plan.masks), -1)  # fmt: skip
        card = self.model.card
        names = [f.name for f in card.numeric] + [f.name for f in card.categorical]
        full, empty = int(np.flatnonzero(plan.masks.all(1))[0]), int(np.flatnonzero(~plan.masks.any(1))[0])
        method = ("exact Shapley values (every coalition)" if plan.exact else
                  f"Shapley values sampled over {plan.permutations} permutations (antithetic pairs)")  # fmt: skip
        common = {"unit": card.output_unit or "", "method": method, "rows_run": len(plan.masks) * len(bg_numeric),
                  "background": source}  # fmt: skip
        answers = []
        for out in outputs:
            answer = {**common, **self._attributed(plan, out.mean(1), full, empty, names)}
            if self.task == "binary_classification":
                p = np.clip(out, 1e-7, 1 - 1e-7)
                answer["log_odds"] = self._attributed(plan, np.log(p / (1 - p)).mean(1), full, empty, names)
            answers.append(answer)
        return answers

    @staticmethod
    def _attributed(plan: explain.Plan, values: np.ndarray, full: int, empty: int, names: list[str]) -> dict[str, Any]:
        phi, error = explain.shapley(plan, values)
        errors = dict(zip(names, error.tolist(), strict=True)) if error is not None else None
        return {"prediction": float(values[full]), "baseline": float(values[empty]),
                "attributions": dict(zip(names, phi.tolist(), strict=True)), "standard_errors": errors}  # fmt: skip

    async def compute(self, rows: list[dict[str, Any]]) -> tuple[Any, tuple[np.ndarray, ...]]:
        """Validated rows -> (one output value per row, the warnings of each row), and drift's parts."""
        numeric, codes, warnings = self.encoder.encode(rows)
        if self.feeds is None:
            inputs, out = await self.run(lambda: (numeric, codes))
            return (out[:, 0].tolist(), warnings), (*inputs, out)
        _, out = await self.run(lambda: self.graph_inputs(numeric, codes))
        out = self.answer(out)
        return (out[:, 0].tolist(), warnings), (numeric, codes, out)

    def differences(self, live: tuple[list[float], Any], shadow: tuple[list[float], Any]) -> tuple[str, list[float]]:
        measure = "probability_difference" if self.task == "binary_classification" else "absolute_difference"
        return measure, [abs(a - b) for a, b in zip(live[0], shadow[0], strict=True)]

    def drift_names(self) -> list[str]:
        card = self.model.card
        return [f.name for f in card.numeric] + [f.name for f in card.categorical] + ["output"]

    def parts(self, inputs: Inputs, output: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.feeds is None:
            return (*inputs, output)
        card = self.model.card
        numeric, codes = self.feeds.encoded(inputs, len(card.numeric), len(card.categorical), self.positions)
        return numeric, codes, self.answer(output)

    def drift_columns(self, parts: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        numeric, codes, output = parts  # as the graph takes them: dates as decimal years, IDs as codes
        return [*numeric.T, *codes.T, output[:, 0]]

    def describe(self) -> dict[str, Any]:
        card, note = self.model.card, "raw values in column order (dates as decimal years); categorical columns as "
        note += "integer codes: closed vocabularies as positions in the card's values, IDs as they are, "
        note += "hashed IDs as their bucket (service/hashing.py)"
        columns = {"numeric_columns": [f.name for f in card.numeric],
                   "categorical_columns": [f.name for f in card.categorical]}  # fmt: skip
        if card.graph is not None:  # a brought graph: its own inputs, each with its features' columns
            columns = {"input_columns": {feed.input: feed.fields for feed in card.graph.feeds}}
            note = "each input's columns are the features named, as the card describes them: numbers raw (dates "
            note += "as decimal years), closed vocabularies as strings to string inputs, else their positions"
        return {**super().describe(), **columns, "input_note": note}

    def smoke(self) -> None:
        """The card's example row (the documented minimal request) must give a finite answer, and a
        classifier's a probability."""
        example = self.types.row.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
        try:
            row = self.types.row.model_validate(example, strict=False)
        except ValueError as e:
            raise self.fail(f"its own example row is not a valid request ({str(e).splitlines()[0]})") from None
        numeric, codes, _ = self.encoder.encode([row.__dict__])
        value = float(self.answer(self.model.run(*self.graph_inputs(numeric, codes)))[0, 0])
        if not math.isfinite(value) or (self.task == "binary_classification" and not 0 <= value <= 1):
            raise self.fail(f"smoke prediction on the card's example row gave {value}")


def _shapes(tensors: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in tensors) or "nothing"


def _bad_outcome(loc: list[str | int], expected: str, outcome: Any) -> InvalidInput:
    return InvalidInput(f"{loc[0]}: expected {expected}", [field_error(loc, expected, outcome, "outcome")])


class Regression(Tabular):
    task = "regression"

    def check_outcome(self, outcome: Any, loc: list[str | int]) -> None:
        if not (isinstance(outcome, int | float) and not isinstance(outcome, bool) and outcome > 0):
            raise _bad_outcome(loc, "a number > 0", outcome)

    def measures(self, outputs: list[Any], outcomes: list[Any]) -> dict[str, float | int | None]:
        p, y = np.asarray(outputs, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
        # (R² needs a spread of outcomes a window may not have)
        return {"rows": len(p), "mae": float(np.mean(np.abs(p - y))), "median_ape": float(np.median(np.abs(p - y) / y))}


class BinaryClassification(Tabular):
    task = "binary_classification"

    def check_outcome(self, outcome: Any, loc: list[str | int]) -> None:
        if outcome not in (0, 1) or isinstance(outcome, str):
            raise _bad_outcome(loc, "clicked: true/false or 1/0", outcome)

    def measures(self, outputs: list[Any], outcomes: list[Any]) -> dict[str, float | int | None]:
        p, y = np.asarray(outputs, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
        both = 0 < y.sum() < len(y)  # AUC needs a click and a non-click
        return {"rows": len(p), "auc": roc_auc(y, p) if both else None, "log_loss": log_loss(y, p),
                "calibration_error": calibration_error(y, p)}  # fmt: skip
