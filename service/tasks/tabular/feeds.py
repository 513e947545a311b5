"""A brought model's graph inputs from the encoder's two tensors, and back: the one place that knows
how a scikit-learn, XGBoost or LightGBM graph takes the card's features (its `graph` block).

Our trainers' graphs take the encoder's tensors as they are (numeric float32, categorical int64), so
they need none of this. A converted graph takes, per input, a tensor of some of the features' columns:
one input per column (skl2onnx's ColumnTransformer pipelines), or all numbers in one float tensor
(onnxmltools' boosters). Strings go to a string input as the value; a closed vocabulary to a number
input as its position; dates as decimal years; booleans as 1/0; IDs as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.cards import ModelCard

STRING = "object"  # the card's dtype of a string input (numpy holds the strings in object arrays)
NUMBER_DTYPES = ("float32", "float64", "int64", "int32")


class FeedError(ValueError):
    """A card's graph block that does not fit its graph or its features; the message says which."""


@dataclass(frozen=True)
class Column:
    source: int  # 0: the encoder's numbers, 1: its codes
    index: int  # the column there
    strings: np.ndarray | None = None  # a closed vocabulary sent to a string input: its values by position


class Feeds:
    """The graph's inputs (in its order) from encoded rows, and the encoded rows from the graph's inputs
    (what drift records of an Open Inference Protocol request)."""

    def __init__(self, card: ModelCard) -> None:
        graph = card.graph
        assert graph is not None
        numeric = {f.name: j for j, f in enumerate(card.numeric)}
        categorical = {f.name: j for j, f in enumerate(card.categorical)}
        by_input = {feed.input: feed for feed in graph.feeds}
        tensors = {t.name: t for t in card.inputs}
        if unknown := sorted(set(by_input) - set(tensors)):
            raise FeedError(f"graph.feeds names input(s) {unknown} the graph does not have (it has {sorted(tensors)})")
        if unfed := [t.name for t in card.inputs if t.name not in by_input]:
            raise FeedError(f"graph input(s) {unfed} are fed by no feature")
        fed = [name for feed in graph.feeds for name in feed.fields]
        if missing := [n for n in [*numeric, *categorical] if n not in fed]:
            raise FeedError(f"feature(s) {missing} feed no graph input")
        self.inputs: list[tuple[str, list[Column]]] = []
        for tensor in card.inputs:
            fields = by_input[tensor.name].fields
            if tensor.dtype not in (STRING, *NUMBER_DTYPES):
                raise FeedError(f"graph input {tensor.name} is {tensor.dtype}: it takes numbers or strings")
            if len(tensor.shape) != 2 or tensor.shape[0] != "N" or tensor.shape[1] not in ("N", len(fields)):
                raise FeedError(f"graph input {tensor.name} {tensor.shape} does not take [N, {len(fields)}] "
                                f"(its features {fields})")  # fmt: skip
            columns = []
            for name in fields:
                if name in numeric:
                    if tensor.dtype == STRING:
                        raise FeedError(f"feature {name} is a number; graph input {tensor.name} takes strings")
                    columns.append(Column(0, numeric[name]))
                elif name in categorical:
                    values = card.categorical[categorical[name]].values
                    strings = np.array(values, dtype=object) if values is not None and tensor.dtype == STRING else None
                    columns.append(Column(1, categorical[name], strings))
                else:
                    raise FeedError(f"graph.feeds: input {tensor.name} names {name!r}, which is not a feature")
            self.inputs.append((tensor.dtype, columns))
        self.column = graph.column

    def graph_inputs(self, numeric: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, ...]:
        """Encoded rows -> the graph's inputs, in its order."""
        sources = (numeric, codes)
        made = []
        for dtype, columns in self.inputs:
            if dtype == STRING:
                parts = [c.strings[sources[1][:, c.index]] if c.strings is not None
                         else sources[c.source][:, c.index].astype(str).astype(object) for c in columns]  # fmt: skip
                made.append(np.stack(parts, axis=1))
            else:
                made.append(np.stack([sources[c.source][:, c.index] for c in columns], axis=1).astype(dtype))
        return tuple(made)

    def encoded(self, inputs: tuple[np.ndarray, ...], numeric_width: int, code_width: int,
                positions: list[dict[str, int] | None]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The graph's inputs -> the encoder's numbers and codes (strings back to positions via `positions`,
        one per categorical feature; a string no vocabulary holds becomes -1, an unseen code)."""
        numeric = np.zeros((len(inputs[0]), numeric_width), dtype=np.float64)
        codes = np.zeros((len(inputs[0]), code_width), dtype=np.int64)
        for array, (_, columns) in zip(inputs, self.inputs, strict=True):
            for k, c in enumerate(columns):
                column = array[:, k]
                if c.source == 0:
                    numeric[:, c.index] = column
                elif array.dtype == object:
                    index = positions[c.index]
                    codes[:, c.index] = [index.get(str(v), -1) if index is not None else _int(v) for v in column]
                else:
                    codes[:, c.index] = column
        return numeric, codes

    def answer(self, output: np.ndarray) -> np.ndarray:
        """The graph's output -> the answer's values, [N, 1] (a classifier's positive column)."""
        return output.reshape(len(output), -1)[:, self.column : self.column + 1]


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1
