"""Reading tabular training data against the contract, and the per-feature statistics a card records.

Policy for bad input: a file that cannot be read, a missing column, an empty file or a value that
does not parse stops the run with the file, line and column named. A value that parses but lies
outside the contract's allowed range (the housing file's 33-bedroom typo) drops that row, and the
count of dropped rows is logged and recorded: the service would refuse such a request anyway.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.cards import CategoricalCard, NumericCard
from service.tasks.tabular.encoder import decimal_year
from training.contract import Categorical, Numeric, TabularSpec
from training.runinfo import TrainingDataError

log = logging.getLogger(__name__)


@dataclass
class TabularData:
    numeric: np.ndarray  # float32 [N, len(spec.numeric)]
    categorical: np.ndarray  # int64 [N, len(spec.categorical)]
    extra: dict[str, np.ndarray]  # target, timestamps: the non-feature columns asked for
    dropped: int = 0  # rows outside the contract's allowed ranges

    def __len__(self) -> int:
        return len(self.numeric)

    def take(self, mask: np.ndarray) -> TabularData:
        return TabularData(self.numeric[mask], self.categorical[mask], {k: v[mask] for k, v in self.extra.items()})

    def concat(self, other: TabularData) -> TabularData:
        """These rows, then `other`'s (the same columns)."""
        extra = {k: np.concatenate([v, other.extra[k]]) for k, v in self.extra.items()}
        return TabularData(np.concatenate([self.numeric, other.numeric]),
                           np.concatenate([self.categorical, other.categorical]), extra)  # fmt: skip


def parse_date(text: str) -> dt.date:
    """'2014-10-13', '20141013' or the King County file's '20141013T000000'."""
    text = text.strip()
    day = text[:10] if "-" in text[:10] else text[:8]
    for layout in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(day, layout).date()
        except ValueError:
            continue
    raise ValueError("expected a date as YYYY-MM-DD or YYYYMMDD")


def _parse_numeric(feature: Numeric) -> Callable[[str], float]:
    def parse(text: str) -> float:
        if feature.date:
            return decimal_year(parse_date(text))
        if feature.boolean and text.strip().lower() in ("true", "false"):
            return float(text.strip().lower() == "true")
        return float(text)

    return parse


def column(feature: Numeric | Categorical) -> str:
    """The training file's column for a feature."""
    return getattr(feature, "column", "") or feature.name


def _parse_categorical(feature: Categorical) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if feature.values is not None:
            if text not in feature.values:
                raise ValueError(f"expected one of {list(feature.values)}")
            return feature.code(text)
        return int(text)

    return parse


def read_tabular_csv(path: Path, spec: TabularSpec, extra: dict[str, Callable[[str], object]]) -> TabularData:
    """Reads the contract's features and the `extra` columns (name -> parser) from a CSV with a header."""
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file: check --data")
    numeric_parsers = [_parse_numeric(f) for f in spec.numeric]
    categorical_parsers = [_parse_categorical(f) for f in spec.categorical]
    numeric, categorical = [], []
    extras: dict[str, list] = {k: [] for k in extra}
    numeric_columns = [column(x) for x in spec.numeric]
    categorical_columns = [column(x) for x in spec.categorical]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise TrainingDataError(f"{path}: empty file (no header row): give a CSV file with a header line")
            missing = [c for c in [*numeric_columns, *categorical_columns, *extra] if c not in reader.fieldnames]
            if missing:
                raise TrainingDataError(
                    f"{path}: line 1: missing column(s) {missing} (the header has {reader.fieldnames}): "
                    "add them, or point --data at a file that has them"
                )
            for row in reader:
                line = reader.line_num
                name = ""
                try:
                    for name, parse in zip(numeric_columns, numeric_parsers, strict=True):
                        numeric.append(parse(row[name]))
                    for name, parse in zip(categorical_columns, categorical_parsers, strict=True):
                        categorical.append(parse(row[name]))
                    for name, parse in extra.items():
                        extras[name].append(parse(row[name]))
                except (ValueError, TypeError) as e:
                    raise TrainingDataError(
                        f"{path}: line {line}, column {name!r}: bad value {row[name]!r} ({e}): "
                        "correct or remove that row"
                    ) from e
    except UnicodeDecodeError as e:
        raise TrainingDataError(f"{path}: not UTF-8 text ({e}): give a UTF-8 CSV file") from e
    except csv.Error as e:
        raise TrainingDataError(f"{path}: not a readable CSV file ({e}): check its quoting and line ends") from e
    n = len(numeric) // max(len(spec.numeric), 1) if spec.numeric else len(categorical) // len(spec.categorical)
    if n == 0:
        raise TrainingDataError(f"{path}: no data rows after the header: give a file with data")
    data = TabularData(
        np.asarray(numeric, dtype=np.float32).reshape(n, len(spec.numeric)),
        np.asarray(categorical, dtype=np.int64).reshape(n, len(spec.categorical)),
        {k: np.asarray(v) for k, v in extras.items()},
    )
    keep = allowed_mask(spec, data.numeric, data.categorical)
    if not keep.all():
        dropped = int((~keep).sum())
        log.warning("%s: dropped %d row(s) outside the contract's allowed ranges", path, dropped)
        data = data.take(keep)
        data.dropped = dropped
    return data


def allowed_mask(spec: TabularSpec, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    keep = np.ones(len(numeric), dtype=bool)
    for i, f in enumerate(spec.numeric):
        keep &= (numeric[:, i] >= f.minimum) & (numeric[:, i] <= f.maximum)
    for i, f in enumerate(spec.categorical):
        lo, hi = f.code_range
        keep &= (categorical[:, i] >= lo) & (categorical[:, i] <= hi)
    return keep


def build_lookups(spec: TabularSpec, categorical: np.ndarray, min_count: int = 1) -> tuple[list, list[list[int]]]:
    """One lookup per categorical: codes seen at least `min_count` times in training get rows 1..K, in
    sorted order; everything else (rare codes, unseen codes) shares row 0, the unknown bucket.

    Training with rare codes in the unknown bucket is what teaches row 0 to stand for a new ID."""
    import torch  # here, not at the top: reading data needs no torch

    from training.models import CodeLookup

    lookups, vocabularies = [], []
    for i, _ in enumerate(spec.categorical):
        codes, counts = np.unique(categorical[:, i], return_counts=True)
        vocab = [int(c) for c in codes[counts >= min_count]]
        low = vocab[0] if vocab else 0
        table = torch.zeros(max(vocab[-1] - low + 1, 1) if vocab else 1, dtype=torch.long)
        for row, code in enumerate(vocab, start=1):
            table[code - low] = row
        lookups.append(CodeLookup(low, table))
        vocabularies.append(vocab)
    return lookups, vocabularies


def feature_cards(
    spec: TabularSpec, numeric_train: np.ndarray, vocabularies: list[list[int]]
) -> tuple[list[NumericCard], list[CategoricalCard]]:
    numeric = []
    for i, f in enumerate(spec.numeric):
        observed = (float(numeric_train[:, i].min()), float(numeric_train[:, i].max()))
        default = observed[1] if f.default == "latest" else f.default
        numeric.append(
            NumericCard(
                name=f.name,
                description=f.description,
                unit=f.unit,
                allowed=(f.minimum, f.maximum),
                observed=observed,
                default=default,
                integer=f.integer,
                boolean=f.boolean,
                date=f.date,
                example=f.example,
            )
        )
    categorical = [
        CategoricalCard(
            name=f.name,
            description=f.description,
            values=list(f.values) if f.values else None,
            allowed=f.code_range,
            vocabulary=vocab,
            default=f.default,
            example=f.example,
        )
        for f, vocab in zip(spec.categorical, vocabularies, strict=True)
    ]
    return numeric, categorical


def layout(spec: TabularSpec, label: str) -> dict[str, object]:
    """A data file's columns as a card records them: training.payload_data writes logged requests back in it."""
    features = [*spec.numeric, *spec.categorical]
    return {"columns": [column(f) for f in features], "fields": [f.name for f in features], "label": label,
            "delimiter": ","}  # fmt: skip
