"""The contract is self-consistent: names unique, examples and defaults allowed, codes in range."""

from __future__ import annotations

import datetime as dt

import pytest

from service.tasks.tabular.encoder import decimal_year
from training.contract import AD_CLICK, HOUSING, IMAGE_TAGGING, TABULAR, Categorical, Numeric


@pytest.mark.parametrize("spec", list(TABULAR.values()), ids=list(TABULAR))
def test_feature_names_are_unique(spec):
    names = [f.name for f in spec.features]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("feature", HOUSING.features + AD_CLICK.features, ids=lambda f: f.name)
def test_examples_and_defaults_are_allowed_values(feature):
    if isinstance(feature, Numeric) and feature.date:
        assert feature.minimum <= decimal_year(dt.date.fromisoformat(str(feature.example))) <= feature.maximum
        assert feature.default in (None, "latest")
    elif isinstance(feature, Numeric):
        assert feature.minimum <= feature.example <= feature.maximum
        if feature.default is not None:
            assert feature.minimum <= feature.default <= feature.maximum
    else:
        assert isinstance(feature, Categorical)
        lo, hi = feature.code_range
        assert lo <= feature.code(feature.example) <= hi
        if feature.default is not None:
            assert lo <= feature.code(feature.default) <= hi


def test_the_lecture_features_are_required():
    required = {f.name for f in HOUSING.features if f.default is None}
    assert {"sqft_living", "bedrooms", "zipcode"} <= required


def test_closed_vocabulary_codes_are_positions():
    device = next(f for f in AD_CLICK.categorical if f.name == "device")
    assert [device.code(v) for v in device.values] == [0, 1, 2]
    with pytest.raises(ValueError):
        device.code("fridge")


def test_image_spec():
    assert len(IMAGE_TAGGING.labels) == 10 and len(IMAGE_TAGGING.mean) == len(IMAGE_TAGGING.std) == 3
