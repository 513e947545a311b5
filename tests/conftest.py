"""Shared paths, and a marker per test folder (unit, integration, contract, training)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HOUSING_CSV = SHARED_DATA / "housing" / "kc_house_sales_2014-05_to_2015-03.csv"
CIFAR_TRAIN = SHARED_DATA / "images" / "cifar10_train.tar.gz"
CIFAR_VAL = SHARED_DATA / "images" / "cifar10_val.tar.gz"
IMAGENET_INDEX = SHARED_DATA / "images" / "imagenet_class_index.json"
SAMPLE_PHOTOS = SHARED_DATA / "images" / "sample_photos"
MODELS = REPO / "models"

# The container tests need a built image: `make container-test` builds one and names it here.
collect_ignore = [] if os.environ.get("NNSERVE_IMAGE") else ["container"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in ("unit", "integration", "contract", "training", "container"):
            item.add_marker(getattr(pytest.mark, folder))
