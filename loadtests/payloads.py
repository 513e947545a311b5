"""Realistic request payloads drawn from real data, shared by the Locust file and the benchmark.

Housing rows are the validation months of the King County file, impressions come from the ad-click
generator (a seed the model did not train on), photos are CIFAR-10 validation photos. The rows come
through training's own loaders, which need no torch, so the load tests send what the model was
validated on.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from loadtests.photos import cifar_photos
from training.contract import AD_CLICK, HOUSING
from training.data_adclick import AD_CATEGORIES, DEVICES, GENDERS, generate
from training.data_housing import load_housing, split_by_date
from training.data_tabular import TabularData

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HOUSING_CSV = SHARED / "housing" / "kc_house_sales_2014-05_to_2015-03.csv"
CIFAR_VAL = SHARED / "images" / "cifar10_val.tar.gz"


def house_requests(data: TabularData) -> list[dict]:
    """Typed-endpoint requests for loaded housing rows, in their order."""
    out = []
    for row, codes, day in zip(data.numeric, data.categorical, data.extra["date"], strict=True):
        house: dict = {}
        for feature, value in zip(HOUSING.numeric, row, strict=True):
            if feature.date:
                house[feature.name] = str(day)  # the sale's own date, as a client sends it
                continue
            house[feature.name] = bool(value) if feature.boolean else int(value) if feature.integer else float(value)
        house.update({f.name: int(code) for f, code in zip(HOUSING.categorical, codes, strict=True)})
        out.append(house)
    return out


@cache
def houses() -> list[dict]:
    """The Feb-Mar 2015 sales (the validation split, as training reads it) as typed-endpoint requests."""
    return house_requests(split_by_date(load_housing(HOUSING_CSV))[1])


@cache
def impressions(n: int = 5_000) -> list[dict]:
    """Generated impressions from a seed the committed model did not train on."""
    imp = generate(n, seed=123)
    out = []
    for age, codes in zip(imp.numeric[:, 0], imp.categorical, strict=True):
        row = {"age": int(age)}
        for feature, code in zip(AD_CLICK.categorical, codes, strict=True):
            row[feature.name] = int(code)
        row["gender"], row["device"] = GENDERS[row["gender"]], DEVICES[row["device"]]
        row["category"] = AD_CATEGORIES[row["category"]]
        out.append(row)
    return out


@cache
def cifar_jpegs(per_class: int = 20) -> list[tuple[str, bytes]]:
    """(class, JPEG bytes) of the first `per_class` validation photos of each class."""
    return cifar_photos(CIFAR_VAL, per_class)
