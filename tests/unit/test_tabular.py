"""The tabular encoder (built from the card alone), both of its ways (a few rows, many rows), against a
row-by-row oracle built from the contract: same tensors, same warnings in the same order, on rows with
unseen IDs, numbers and dates outside the range seen in training."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np

from service.cards import read_card
from service.tasks.tabular.encoder import TabularEncoder, decimal_year
from tests.conftest import MODELS
from training.contract import AD_CLICK, HOUSING


def _number(feature, value):
    return decimal_year(value) if feature.date else float(value)


def oracle(spec, card, rows):
    numeric = [[_number(f, row[f.name]) for f in spec.numeric] for row in rows]
    codes = [[f.code(row[f.name]) for f in spec.categorical] for row in rows]
    warned = []
    for row, row_codes in zip(rows, codes, strict=True):
        fields = [
            f.name
            for f, spec_f in zip(card.numeric, spec.numeric, strict=True)
            if not f.boolean and not f.observed[0] <= np.float32(_number(spec_f, row[f.name])) <= f.observed[1]
        ]
        fields += [f.name for f, c in zip(card.categorical, row_codes, strict=True) if c not in set(f.vocabulary)]
        warned.append(fields)
    return np.array(numeric, np.float32), np.array(codes, np.int64), warned


def test_the_encoder_agrees_with_the_row_by_row_oracle():
    rng = random.Random(0)
    for spec, name in ((HOUSING, "housing-price"), (AD_CLICK, "ad-click")):
        card = read_card(MODELS / name)
        rows = []
        for _ in range(300):
            row = {}
            for f in spec.numeric:
                lo, hi = f.minimum, f.maximum
                value = rng.uniform(lo, hi)
                if f.date:  # around the training months: inside, before and after them
                    row[f.name] = dt.date(2014, 1, 1) + dt.timedelta(days=rng.randrange(600))
                    continue
                row[f.name] = bool(value > (lo + hi) / 2) if f.boolean else int(value) if f.integer else value
            for f in spec.categorical:
                row[f.name] = rng.choice(f.values) if f.values else rng.randint(f.minimum, f.maximum)
            rows.append(row)
        numeric, codes, warnings = TabularEncoder(card).encode(rows)
        expected_numeric, expected_codes, expected_fields = oracle(spec, card, rows)
        assert np.array_equal(numeric, expected_numeric) and np.array_equal(codes, expected_codes)
        assert [[w["field"] for w in row] for row in warnings] == expected_fields
        assert any(expected_fields), "the rows must include values that get warnings"
        encoder = TabularEncoder(card)
        for row, fields in zip(rows[:20], expected_fields[:20], strict=True):  # one row: the other way
            one_numeric, one_codes, one_warnings = encoder.encode([row])
            assert one_numeric.shape == (1, len(spec.numeric)) and one_codes.shape == (1, len(spec.categorical))
            assert [w["field"] for w in one_warnings[0]] == fields


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_the_seen_table_costs_only_the_pages_it_touches():
    # The ad-click card allows IDs up to 2**31-1: its table of seen codes is gigabytes of zeros, which
    # calloc leaves unbacked. A copy of it (29d47f3's bytes) made every page and OOM-killed the suite.
    card, rows = read_card(MODELS / "ad-click"), []
    rng = random.Random(1)
    for _ in range(50):
        row = {}
        for f in AD_CLICK.numeric:
            row[f.name] = int(f.minimum) if f.integer or f.boolean else float(f.minimum)
        for f in AD_CLICK.categorical:
            row[f.name] = rng.choice(f.values) if f.values else rng.randint(f.minimum, f.maximum)
        rows.append(row)
    before = _resident_bytes()
    encoder = TabularEncoder(card)
    for row in rows:
        encoder.encode([row])
    encoder.encode(rows)
    assert encoder.seen.nbytes > 1 << 30, "the card no longer has a huge ID range: this test checks nothing"
    assert _resident_bytes() - before < 256 << 20
