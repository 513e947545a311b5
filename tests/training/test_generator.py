"""The ad-click impression generator: reproducible, realistic base rate and oracle AUC, new ads over time."""

from __future__ import annotations

import numpy as np
import pytest

from training.contract import AD_CLICK
from training.data_adclick import generate, write_csv
from training.data_tabular import read_tabular_csv
from training.metrics import roc_auc


@pytest.fixture(scope="module")
def impressions():
    return generate(200_000, seed=0)


def test_same_seed_same_impressions_other_seed_others(impressions):
    again = generate(200_000, seed=0)
    other = generate(200_000, seed=1)
    assert np.array_equal(impressions.categorical, again.categorical)
    assert np.array_equal(impressions.clicked, again.clicked)
    assert np.array_equal(impressions.p_true, again.p_true)
    assert not np.array_equal(impressions.clicked, other.clicked)


def test_base_rate_is_a_few_percent(impressions):
    assert 0.02 <= impressions.clicked.mean() <= 0.06
    assert abs(impressions.p_true.mean() - 0.04) < 0.002


def test_oracle_auc_is_where_real_ctr_data_sits(impressions):
    assert 0.75 <= roc_auc(impressions.clicked, impressions.p_true) <= 0.85


def test_new_ad_ids_appear_over_time(impressions):
    ads = impressions.categorical[:, 3]
    cut = int(len(ads) * 0.8)
    unseen = ~np.isin(ads[cut:], ads[:cut])
    assert 0.001 < unseen.mean() < 0.2
    assert np.all(np.diff(impressions.timestamp) >= 0)


def test_codes_respect_the_contract(impressions):
    for i, feature in enumerate(AD_CLICK.categorical):
        lo, hi = feature.code_range
        assert impressions.categorical[:, i].min() >= lo and impressions.categorical[:, i].max() <= hi
    assert len(np.unique(impressions.categorical[:, 3])) > 1_000  # ad ids: thousands


def test_csv_round_trip_reads_back_the_same_impressions(tmp_path):
    imp = generate(2_000, seed=3)
    path = write_csv(imp, tmp_path / "log.csv")
    data = read_tabular_csv(path, AD_CLICK, {"timestamp": float, "clicked": int})
    assert np.array_equal(data.categorical, imp.categorical)
    assert np.array_equal(data.numeric, imp.numeric)
    assert np.array_equal(data.extra["clicked"], imp.clicked)
