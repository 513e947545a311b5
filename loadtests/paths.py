"""Where the repository, its committed models and the shared data sets are, for the load tests, the
benchmarks and the test suite alike (tests/conftest.py takes them from here)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HOUSING_CSV = SHARED_DATA / "housing" / "kc_house_sales_2014-05_to_2015-03.csv"
CIFAR_TRAIN = SHARED_DATA / "images" / "cifar10_train.tar.gz"
CIFAR_VAL = SHARED_DATA / "images" / "cifar10_val.tar.gz"
IMAGENET_INDEX = SHARED_DATA / "images" / "imagenet_class_index.json"
SAMPLE_PHOTOS = SHARED_DATA / "images" / "sample_photos"
MODELS = REPO / "models"
