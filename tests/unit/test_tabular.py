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


def test_an_integer_field_is_checked_in_pydantics_core_as_the_python_validator_checked_it():
    """types.integer (a core schema, no Python call) against Integer with ge and le (a Python before-validator),
    the oracle, each as a request model's field: the same value or the same errors, in JSON and in Python, for
    whole floats, fractions, the 2**53 edge, strings, booleans, NaN, null, containers and bounds; the same
    JSON schema."""
    import json

    from pydantic import Field, ValidationError, create_model

    from service.tasks.tabular.types import REQUEST_CONFIG, WHOLE, Integer, integer

    def outcome(model, value, as_json):
        try:
            got = model.model_validate_json(value) if as_json else model.model_validate(value)
            return "ok", got.x, type(got.x)
        except ValidationError as e:
            return "error", [(x["type"], x["msg"], x["loc"]) for x in e.errors(include_url=False)]

    texts = ["0", "7", "-7", "7.0", "-0.0", "7.5", "1e3", "1e300", "-1e300", '"7"', "true", "false", "null", "[7]",
             '{"a": 7}', str(WHOLE), f"{WHOLE}.0", f"{WHOLE + 2}", f"{float(WHOLE * 2)}", f"-{WHOLE}.0", "NaN",
             "Infinity", "2147483647", "2147483648.0"]  # fmt: skip
    checked = 0
    for low, high in ((0, 10), (-5, 5), (100, 20_000), (0, 2**31 - 1), (-WHOLE, WHOLE), (0, 2**63)):
        kind, checks = integer(low, high)
        ours = create_model("Ours", __config__=REQUEST_CONFIG, x=(kind, Field(..., **checks, description="d")))
        oracle = create_model("Oracle", __config__=REQUEST_CONFIG, x=(Integer, Field(..., ge=low, le=high,
                                                                                    description="d")))  # fmt: skip
        for text in texts:
            body = f'{{"x": {text}}}'
            assert outcome(ours, body, True) == outcome(oracle, body, True), (low, high, text)
            try:
                value = json.loads(text)
            except ValueError:
                continue
            assert outcome(ours, {"x": value}, False) == outcome(oracle, {"x": value}, False), (low, high, text)
            checked += 1
        assert ours.model_json_schema()["properties"] == oracle.model_json_schema()["properties"]
    assert checked > 100
