"""Request rows -> the graph's two tensors, with a warning for every value the model has not seen,
all from the model card.

Unseen categorical codes are not errors: the graph sends them to the unknown bucket; the warning
says so. Numbers (and dates) inside the allowed range but outside the range seen in training are
served too, with a warning that the model is extrapolating.
"""

from __future__ import annotations

import array
import datetime as dt
from collections.abc import Callable
from functools import lru_cache
from operator import itemgetter, le
from typing import Any

import numpy as np

from service.cards import ModelCard
from service.hashing import bucket, buckets_of

SMALL = 8  # rows up to which plain Python beats numpy's per-call overhead


@lru_cache(maxsize=4096)  # a batch's dates repeat (a day's sales); each costs three date objects
def decimal_year(day: dt.date) -> float:
    """2015-04-01 -> 2015.2466: the year plus the share of it gone by, what a date feature feeds the model."""
    start = dt.date(day.year, 1, 1)
    return day.year + (day - start).days / (dt.date(day.year + 1, 1, 1) - start).days


def date_of(year: float) -> str:
    """The inverse of decimal_year, as YYYY-MM-DD (for messages and documentation)."""
    whole = int(year)
    start = dt.date(whole, 1, 1)
    days = (dt.date(whole + 1, 1, 1) - start).days
    return (start + dt.timedelta(days=min(days - 1, round((year - whole) * days)))).isoformat()


class TabularEncoder:
    """Two ways to the same tensors and warnings, chosen by size (measured on the ad-click model):
    plain Python for a few rows (one row: 2.7 us; the numpy way 11 us), and for batches a handful of
    numpy operations whatever the number of rows: the rows read column by column (itemgetter), one
    range test for all numbers, one table lookup for all codes (256 ad-click rows: 207 us; row by row
    498 us). Warnings are built only for the value that needs one, their range text made once.
    tests/unit/test_tabular.py checks both ways against a row-by-row oracle."""

    def __init__(self, card: ModelCard, dtype: type = np.float32) -> None:
        self.dtype = dtype  # the numbers' dtype: float32, or float64 for a graph that takes doubles
        self.numeric = [(f.name, f.observed) for f in card.numeric]
        self.dates = [f.date for f in card.numeric]
        self.seen_range = [_seen_range(f.observed, f.date) for f in card.numeric]  # for warnings, made once
        self.categorical = [(f.name, f.values) for f in card.categorical]
        inf = float("inf")
        # Booleans are never "outside the range seen": their bounds are open.
        self.low = np.array([-inf if f.boolean else f.observed[0] for f in card.numeric])
        self.high = np.array([inf if f.boolean else f.observed[1] for f in card.numeric])
        # Seen codes as one flat table: column j's code c is at offsets[j] + c - minimum[j].
        self.minimum = np.array([f.allowed[0] for f in card.categorical], dtype=np.int64)
        sizes = [f.allowed[1] - f.allowed[0] + 1 for f in card.categorical]
        self.offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self.seen = np.zeros(sum(sizes), dtype=bool)
        for j, f in enumerate(card.categorical):
            if f.hashing is not None:
                self.seen[self.offsets[j] : self.offsets[j] + sizes[j]] = f.seen_buckets()
            else:
                self.seen[[self.offsets[j] + c - self.minimum[j] for c in f.vocabulary]] = True
        self.closed = [
            {v: i for i, v in enumerate(f.values)} if f.values is not None else None for f in card.categorical
        ]
        # Open IDs the service hashes (service/hashing.py): column -> (salt, buckets)
        self.hashed = {j: (f.hashing.salt, f.hashing.buckets) for j, f in enumerate(card.categorical) if f.hashing}
        # The few-row way's forms of the same: plain Python, read without numpy's per-element cost.
        self.read_numeric = _reader([f.name for f in card.numeric])
        self.date_positions = [j for j, f in enumerate(card.numeric) if f.date]
        self.typecode = {np.float32: "f", np.float64: "d"}[dtype]  # the C type of the dtype, for array.array
        self.categorical_names = [f.name for f in card.categorical]
        self.read_codes = _reader(self.categorical_names)  # the batch way's code columns, read as the numbers are
        self.low_list, self.high_list = self.low.tolist(), self.high.tolist()
        # Column j's code c is at first_code[j] + c. A view, not a copy: the table's untouched pages (an ID
        # column's range may be billions) are never made, where a copy would make them all.
        self.seen_view = memoryview(self.seen)
        self.first_code = (self.offsets - self.minimum).tolist()

    def encode(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[list[dict[str, Any]]]]:
        """Validated rows (field -> value) -> numeric [N, F] (float32, or the dtype given), codes [N, C] int64,
        warnings per row."""
        return self._few(rows) if len(rows) <= SMALL else self._many(rows)

    def _few(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[list[dict[str, Any]]]]:
        # The rows' fields read in C (itemgetter), the tensors made from C arrays (array.array: one call each,
        # where np.array of a list and a reshape cost 9,000 instructions more a row), the values as the model
        # sees them (float32) read back from the same array, and the range test made in C unless it fails.
        numbers: list[Any] = []
        for row in rows:
            values = self.read_numeric(row)
            if self.date_positions:
                values = list(values)
                for j in self.date_positions:
                    values[j] = decimal_year(values[j])
            numbers.extend(values)
        width, count = len(self.numeric), len(rows)
        buffer = array.array(self.typecode, numbers)
        numeric = np.ndarray((count, width), self.dtype, buffer)
        hashed, index = self.hashed, self.closed
        codes = [  # a hashed open ID's bucket, a closed set's index, or the code itself
            bucket(row[name], *hashed[j]) if j in hashed else index[j][str(row[name])] if index[j] else row[name]
            for row in rows
            for j, name in enumerate(self.categorical_names)
        ]
        warnings: list[list[dict[str, Any]]] = []
        low, high, seen, first = self.low_list, self.high_list, self.seen_view, self.first_code
        seen_values = buffer.tolist()  # as the model sees them
        code_width = len(self.categorical)
        for r, row in enumerate(rows):
            values = seen_values if count == 1 else seen_values[r * width : (r + 1) * width]
            if all(map(le, low, values)) and all(map(le, values, high)):
                found = []
            else:  # (NaN is outside too, as before)
                found = [self._outside(row, j) for j, value in enumerate(values) if not low[j] <= value <= high[j]]
            for j, code in enumerate(codes[r * code_width : (r + 1) * code_width]):
                if not seen[first[j] + code]:
                    found.append(self._unseen(row, j))
            warnings.append(found)
        return numeric, np.ndarray((count, code_width), np.int64, array.array("q", codes)), warnings

    def _many(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[list[dict[str, Any]]]]:
        table = list(map(self.read_numeric, rows))
        if self.date_positions:
            columns = list(zip(*table, strict=True))
            for j in self.date_positions:
                columns[j] = tuple(map(decimal_year, columns[j]))
            table = list(zip(*columns, strict=True))
        values = np.array(table, dtype=np.float64).reshape(len(rows), len(self.numeric)).astype(self.dtype)
        codes = np.empty((len(rows), len(self.categorical)), dtype=np.int64)
        columns = list(zip(*map(self.read_codes, rows), strict=True))
        for j, (column, index) in enumerate(zip(columns, self.closed, strict=True)):
            if j in self.hashed:
                codes[:, j] = buckets_of(column, *self.hashed[j])
            else:
                codes[:, j] = column if index is None else [index[str(value)] for value in column]
        outside = (values < self.low) | (values > self.high)  # as the model sees them, in float32
        position = np.clip(codes - self.minimum, 0, None) + self.offsets
        unseen = ~self.seen[np.minimum(position, len(self.seen) - 1)]
        warnings: list[list[dict[str, Any]]] = [[] for _ in rows]
        if outside.any() or unseen.any():
            for r, j in zip(*np.nonzero(outside), strict=True):
                warnings[r].append(self._outside(rows[r], j))
            for r, j in zip(*np.nonzero(unseen), strict=True):
                warnings[r].append(self._unseen(rows[r], j))
        return values, codes, warnings

    def _outside(self, row: dict[str, Any], j: int) -> dict[str, Any]:
        name = self.numeric[j][0]
        value = row[name].isoformat() if self.dates[j] else row[name]
        shown = value if isinstance(value, str) else f"{value:g}"
        seen = self.seen_range[j]
        message = f"{name} {shown} is outside the range seen in training ({seen}): the model is extrapolating"
        return {"field": name, "value": value, "message": message}

    def _unseen(self, row: dict[str, Any], j: int) -> dict[str, Any]:
        name, values = self.categorical[j]
        value = row[name]
        what = "ID" if values is None else "value"
        message = f"{name} {value}: {what} not seen in training, served through the unknown bucket"
        return {"field": name, "value": value, "message": message}


def _seen_range(observed: tuple[float, float], date: bool) -> str:
    lo, hi = observed
    return f"{date_of(lo)} to {date_of(hi)}" if date else f"{lo:g} to {hi:g}"


def _reader(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row's values of these fields, in their order, as a tuple: itemgetter walks the names in C."""
    if len(names) > 1:
        return itemgetter(*names)
    return (lambda row: (row[names[0]],)) if names else (lambda row: ())
