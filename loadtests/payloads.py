"""Realistic request payloads drawn from real data, shared by the Locust file and the benchmark.

Housing rows are the validation months of the King County file, impressions come from the ad-click
generator (later than its training slice), photos are CIFAR-10 validation photos. Nothing here needs
torch: the CSV is read with the contract's feature list.
"""

from __future__ import annotations

import csv
import tarfile
from functools import cache
from pathlib import Path

from service.contract import AD_CLICK, HOUSING
from training.data_adclick import AD_CATEGORIES, DEVICES, GENDERS, generate
from training.data_housing import VALIDATION_FROM

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HOUSING_CSV = SHARED / "housing" / "kc_house_sales_2014-05_to_2015-03.csv"
CIFAR_VAL = SHARED / "images" / "cifar10_val.tar.gz"


@cache
def houses() -> list[dict]:
    """The Feb-Mar 2015 sales as typed-endpoint requests (rows outside the contract's ranges skipped)."""
    out = []
    with open(HOUSING_CSV, newline="") as f:
        for row in csv.DictReader(f):
            if row["date"][:8] < VALIDATION_FROM:
                continue
            house: dict = {}
            for feature in HOUSING.numeric:
                value = float(row[feature.name])
                house[feature.name] = bool(value) if feature.boolean else int(value) if feature.integer else value
            house["zipcode"] = int(row["zipcode"])
            if all(f.minimum <= float(house[f.name]) <= f.maximum for f in HOUSING.numeric):
                out.append(house)
    return out


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
def cifar_jpegs(limit: int = 200) -> list[tuple[str, bytes]]:
    """(class, JPEG bytes) of the first `limit` validation photos, classes interleaved."""
    by_class: dict[str, list[bytes]] = {}
    with tarfile.open(CIFAR_VAL) as tar:
        for member in tar:
            if member.isfile():
                by_class.setdefault(member.name.split("/")[0], []).append(tar.extractfile(member).read())  # type: ignore[union-attr]
    out = []
    for i in range(max(len(v) for v in by_class.values())):
        for cls, photos in sorted(by_class.items()):
            if i < len(photos) and len(out) < limit:
                out.append((cls, photos[i]))
    return out
