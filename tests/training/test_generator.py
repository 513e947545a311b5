"""The ad-click impression generator: reproducible, realistic base rate and oracle AUC, new ads over time."""

from __future__ import annotations

import numpy as np
import pytest

from service.measures import roc_auc
from training.contract import AD_CLICK
from training.data_adclick import generate, write_csv
from training.data_tabular import read_tabular_csv


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


# --- the same impressions in the layouts of real click logs (training/data_clicklogs.py) -------------
@pytest.fixture(scope="module")
def small():
    return generate(20_000, seed=3)


def _read(path):
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return f.read().splitlines()


def test_the_avazu_layout_has_its_columns_hours_ids_missing_values_and_the_true_probabilities(tmp_path, small):
    from training.data_clicklogs import AVAZU_COLUMNS, write_log

    lines = _read(write_log(small, "avazu", tmp_path / "avazu.csv.gz"))
    assert lines[0].split(",") == AVAZU_COLUMNS and len(lines) == len(small) + 1
    rows = [line.split(",") for line in lines[1:]]
    column = {name: [r[i] for r in rows] for i, name in enumerate(AVAZU_COLUMNS)}
    assert all(len(r) == len(AVAZU_COLUMNS) for r in rows)
    assert column["click"] == [str(c) for c in small.clicked]
    hours = [int(h) for h in column["hour"]]
    assert hours[0] == 14102100 and hours == sorted(hours) and max(hours) <= 14111923  # YYMMDDHH, 30 days
    assert all(len(h) == 8 for h in column["hour"]) and {h[-2:] for h in column["hour"]} == {
        f"{i:02d}" for i in range(24)
    }
    assert max(int(i) for i in column["id"]) > 2**62  # 64-bit IDs
    assert all(len(x) == 8 and int(x, 16) >= 0 for x in column["site_id"])  # hex hashes
    assert {len(x) for x in column["device_id"]} == {16}
    assert set(column["C1"]) == {"1005"} and set(column["device_conn_type"]) == {"0"}  # constant columns
    assert "-1" in column["C20"]  # missing values
    p_true = np.loadtxt(tmp_path / "avazu.csv.gz.p_true")
    assert np.allclose(p_true, small.p_true, atol=1e-6)


def test_the_criteo_layout_has_13_integers_26_hashes_gaps_and_a_constant_column(tmp_path, small):
    from training.data_clicklogs import write_log

    lines = _read(write_log(small, "criteo", tmp_path / "criteo.tsv"))
    rows = [line.split("\t") for line in lines]
    assert len(rows) == len(small) and all(len(r) == 1 + 13 + 26 for r in rows)
    assert [int(r[0]) for r in rows] == small.clicked.tolist()
    integers = [[r[i] for r in rows] for i in range(1, 14)]
    hashes = [[r[i] for r in rows] for i in range(14, 40)]
    assert all(v == "" or v.isdigit() for col in integers for v in col)
    assert sum(v == "" for v in integers[0]) > 0 and {v for v in integers[11]} == {"0"}  # gaps; I12 constant
    assert all(v == "" or (len(v) == 8 and int(v, 16) >= 0) for col in hashes for v in col)
    assert "" in hashes[0] and len(set(hashes[19])) == 1  # unknown gender missing; C20 constant
    # The simulated IDs survive hashing: as many distinct ads (C4) as the impressions hold.
    assert len(set(hashes[3])) == len(np.unique(small.categorical[:, 3]))
    assert roc_auc(small.clicked, np.loadtxt(tmp_path / "criteo.tsv.p_true")) == pytest.approx(
        roc_auc(small.clicked, small.p_true), abs=1e-4
    )
