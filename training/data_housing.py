"""The King County sales file, read against the housing contract, and its split by sale date."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np

from training.contract import HOUSING, TabularSpec
from training.data_tabular import TabularData, parse_date, read_tabular_csv
from training.runinfo import TrainingDataError

VALIDATION_FROM = "2015-02-01"  # train on sales before February 2015, validate on Feb-Mar 2015
# How a card's reference names its rows (features, outputs): the trainer writes them, training.reference
# rebuilds them, with the final fit on every labelled sale or (--no-refit) from the split.
REFERENCE_ROWS = {True: ("every labelled sale", "the final fit on every labelled sale"),
                  False: ("training split", "validation split")}  # fmt: skip


def _sale_day(text: str) -> str:
    """'20141013T000000' -> '2014-10-13', checked to be a real date."""
    return parse_date(text).isoformat()


def housing_spec(drop: str = "") -> TabularSpec:
    """The contract's housing features, less those named in `drop` (comma-separated), for ablations."""
    names = {x.strip() for x in drop.split(",") if x.strip()}
    unknown = names - {f.name for f in HOUSING.features}
    if unknown:
        raise TrainingDataError(f"--drop-features {sorted(unknown)}: no such feature; the features are "
                                f"{[f.name for f in HOUSING.features]}")  # fmt: skip
    if not names:
        return HOUSING
    return dataclasses.replace(
        HOUSING,
        numeric=tuple(f for f in HOUSING.numeric if f.name not in names),
        categorical=tuple(f for f in HOUSING.categorical if f.name not in names),
    )


def load_housing(path: Path, spec: TabularSpec = HOUSING) -> TabularData:
    """Features in contract order, plus `price` (USD) and `date` (YYYY-MM-DD) per sale.

    A house sold twice appears twice: both are real sales at their own dates."""
    return read_tabular_csv(path, spec, {"price": float, "date": _sale_day})


def _date(text: str, flag: str) -> str:
    try:
        return parse_date(text).isoformat()
    except ValueError:
        raise TrainingDataError(
            f"{flag} {text!r}: expected a date (2015-02-01) or, for --split, the share of the latest sales "
            "to validate on (0.2)"
        ) from None


def split_by_date(
    data: TabularData, at: str = VALIDATION_FROM, train_before: str = ""
) -> tuple[TabularData, TabularData]:
    """Validation: the sales from `at` on, where `at` is a date or a share of the latest sales ("0.2").
    Training: the sales before `at`, or before `train_before` when given (a gap between the two shows
    how the model ages). Refuses a side left empty, naming the data's dates."""
    dates = data.extra["date"]
    first, last = min(dates), max(dates)
    try:
        share = float(at)
    except ValueError:
        share = None
    if share is not None:
        if not 0 < share < 1:
            raise TrainingDataError(f"--split {at}: a share of the latest sales must be between 0 and 1 (0.2)")
        at = str(np.sort(dates)[int(len(dates) * (1 - share))])  # sales of one day stay on one side
    else:
        at = _date(at, "--split")
    until = _date(train_before, "--train-before") if train_before else at
    if until > at:
        raise TrainingDataError(f"--train-before {until} is after --split {at}: training would overlap validation")
    train, val = data.take(dates < until), data.take(dates >= at)
    for side, rows, what in (("train on", train, f"before {until}"), ("validate on", val, f"from {at} on")):
        if not len(rows):
            raise TrainingDataError(
                f"--split {at}: no sales {what} to {side}; the data runs from {first} to {last}: "
                "choose a date inside that range, or a share of the latest sales (--split 0.2)"
            )
    return train, val


def months(start: str, end: str) -> str:
    """'2014-05-02', '2015-01-31' -> 'May 2014 - Jan 2015' (for the card's split text)."""
    a, b = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return f"{a:%b %Y} - {b:%b %Y}"
