"""The King County sales file, read against the housing contract, and its split by sale date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from service.contract import HOUSING
from training.data_tabular import TabularData, read_tabular_csv

VALIDATION_FROM = "20150201"  # train on sales before February 2015, validate on Feb-Mar 2015


def _sale_date(text: str) -> str:
    """'20141013T000000' -> '20141013', checked to be a real date."""
    day = text[:8]
    dt.datetime.strptime(day, "%Y%m%d")
    return day


def load_housing(path: Path) -> TabularData:
    """Features in contract order, plus `price` (USD) and `date` (YYYYMMDD) per sale.

    A house sold twice appears twice: both are real sales at their own dates."""
    return read_tabular_csv(path, HOUSING, {"price": float, "date": _sale_date})


def split_by_date(data: TabularData) -> tuple[TabularData, TabularData]:
    later = data.extra["date"] >= VALIDATION_FROM
    return data.take(~later), data.take(later)
