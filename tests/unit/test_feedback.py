"""The payload log samples at its set share (service/dataplane/payloads.py), and the outcome store
(service/dataplane/feedback.py) stays bounded: predictions go after the join's TTL, posted outcomes after
NNSERVE_FEEDBACK_KEEP_S, and only those, once a minute (by index, not at each batch)."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.dataplane.feedback import Feedback, Outcomes
from service.errors import InvalidInput, parse_json


def test_outcomes_older_than_keep_go_and_newer_ones_stay(tmp_path):
    store = Outcomes(tmp_path, ttl_s=3600, window=100, keep_s=1000)
    now = time.time()
    store.remember([("old", "m", "1", now, [0.5]), ("new", "m", "1", now, [0.25])])
    for request_id in ("old", "new"):
        joined = asyncio.run(store.join("m", lambda outcome, loc: None, Feedback(request_id=request_id, outcome=1)))
        assert joined["counted"]
    with store.db() as db:  # the first outcome was posted 1,001 s ago
        db.execute("UPDATE feedback SET time = ? WHERE request_id = 'old'", (now - 1001,))
    assert store.pairs("m") == {"1": ([0.25, 0.5], [1, 1])}
    store.remember([])  # within the minute since the last pruning: nothing goes yet
    assert store.pairs("m") == {"1": ([0.25, 0.5], [1, 1])}
    store.pruned = 0.0
    store.remember([])
    assert store.pairs("m") == {"1": ([0.25], [1])}
    store.remember([("gone", "m", "1", now - 3601, [0.1])])
    assert store.db().execute("SELECT count(*) FROM predictions WHERE request_id = 'gone'").fetchone() == (1,)
    store.pruned = 0.0
    store.remember([])  # a prediction past the join's TTL goes at the next pruning
    assert store.db().execute("SELECT count(*) FROM predictions WHERE request_id = 'gone'").fetchone() == (0,)


def test_the_payload_log_keeps_its_sample_share_and_every_entry_at_one(tmp_path):
    import random

    from service.dataplane.payloads import PayloadLog

    outcomes = Outcomes(tmp_path, ttl_s=3600, window=100, keep_s=1000)
    random.seed(0)
    some = PayloadLog(tmp_path, 0.25, 1 << 20, 2, 100, outcomes)
    every = PayloadLog(tmp_path / "all", 1.0, 1 << 20, 2, 100, outcomes)
    kept = sum(some.sampled() for _ in range(4000))
    assert 900 < kept < 1100  # a quarter of 4,000, within 3.6 standard deviations
    assert all(every.sampled() for _ in range(1000))


@pytest.mark.parametrize(
    "outcome", [b"NaN", b"Infinity", b"9" * 400, b'{"x": 1}', b"[1]"], ids=["NaN", "Infinity", "huge", "object", "list"]
)
def test_an_outcome_that_is_no_click_price_or_label_is_one_400_at_outcome(outcome):
    with pytest.raises(InvalidInput) as e:  # a 400-digit integer once raised OverflowError: a 500
        parse_json(b'{"request_id": "a", "outcome": ' + outcome + b"}", Feedback)
    assert [d["loc"] for d in e.value.detail] == [["outcome"]]


@pytest.mark.parametrize("outcome, value", [(b"true", True), (b"5", 5), (b"2.5", 2.5), (b'"cat"', "cat")])
def test_a_click_a_price_or_a_label_is_taken_as_sent(outcome, value):
    assert parse_json(b'{"request_id": "a", "outcome": ' + outcome + b"}", Feedback).outcome == value
