"""Drift's pieces: binning as the card's reference bins, the two measures, the sliding window, and
figures over the windows of several workers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from service.cards import Distribution, ReferenceCard
from service.dataplane.drift import BIN_EVERY, Drift, bin_of, js_distance, psi, warnings
from service.runtime import ModelLoadError
from service.tasks.base import Adapter
from training import distributions


def test_numbers_bin_by_edges_and_codes_by_the_most_frequent_then_other():
    d = Distribution(name="x", kind="feature", edges=[1.0, 2.0], fractions=[0.2, 0.3, 0.5])
    assert bin_of(d, np.array([0.5, 1.0, 1.5, 2.0, 9.0, np.nan])).tolist() == [0, 1, 1, 2, 2, 2]
    c = Distribution(name="c", kind="feature", codes=[98103, 7, 98052], fractions=[0.5, 0.2, 0.2, 0.1])
    assert bin_of(c, np.array([7, 98052, 98103, 5, 2**40])).tolist() == [1, 2, 0, 3, 3]


def test_reference_bins_give_small_values_and_heavy_values_a_bin_of_their_own():
    rng = np.random.default_rng(0)
    flags = distributions.numbers("waterfront", "feature", (rng.random(10_000) < 0.01).astype(np.float32))
    assert flags.edges == [1.0] and flags.fractions[1] == pytest.approx(0.01, abs=0.003)
    renovated = np.where(rng.random(10_000) < 0.95, 0, rng.integers(1950, 2015, 10_000)).astype(np.float32)
    d = distributions.numbers("yr_renovated", "feature", renovated)
    assert d.fractions[bin_of(d, np.array([0.0]))[0]] == pytest.approx(0.95, abs=0.01)  # 0 alone in its bin
    assert sum(d.fractions) == pytest.approx(1, abs=1e-5)
    top = distributions.codes("zip", "feature", rng.integers(0, 100, 10_000))
    assert len(top.codes) == distributions.TOP_CODES and len(top.fractions) == distributions.TOP_CODES + 1


def test_the_measures_are_zero_on_the_same_distribution_and_grow_with_a_shift():
    r = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(r, r) == 0 and js_distance(r, r) == 0
    small, large = np.array([0.3, 0.25, 0.25, 0.2]), np.array([0.7, 0.1, 0.1, 0.1])
    assert 0 < psi(r, small) < psi(r, large) and 0 < js_distance(r, small) < js_distance(r, large) <= 1
    assert np.isfinite(psi(r, np.array([1.0, 0, 0, 0])))  # an empty bin is floored, not infinite


def _drift(window_rows: int = 100, window_s: float = 0) -> Drift:
    card = ReferenceCard(
        features_from="test",
        outputs_from="test",
        distributions=[
            Distribution(name="x", kind="feature", edges=[0.5], fractions=[0.5, 0.5]),
            Distribution(name="day", kind="time", edges=[0.5], fractions=[0.5, 0.5]),
        ],
    )
    return Drift("m v1", card, lambda parts: [parts[0], parts[0]], window_rows, window_s, 0.2, 10)


def _figures(drift: Drift, now: float | None = None) -> dict:
    return drift.figures([drift.fold(now)])


def test_the_window_keeps_the_latest_rows_and_drops_what_is_too_old():
    drift = _drift(window_rows=100)
    drift.record((np.zeros(80),))  # all in bin 0
    drift.record((np.ones(60),))  # all in bin 1: the window keeps 40 zeros and 60 ones
    figures = _figures(drift)
    assert figures["rows"] == 100 and figures["rows_seen"] == 140
    assert figures["distributions"]["x"]["window"] == [0.4, 0.6]
    assert figures["drifted"] == []  # 0.4/0.6 against 0.5/0.5: PSI 0.04
    drift.record((np.ones(100),))
    last = _figures(drift)
    assert last["distributions"]["x"]["window"] == [0, 1] and last["drifted"] == ["x"]  # "day" is time: never
    assert warnings(drift) == [f"m v1: x drifted (PSI {last['distributions']['x']['psi']:.3f} > 0.2 over 100 rows)"]
    timed = _drift(window_rows=100, window_s=60)
    timed.record((np.ones(30),))
    assert _figures(timed)["rows"] == 30 and _figures(timed, now=1e12)["rows"] == 0  # an hour later: all too old


def test_rows_waiting_beyond_a_window_are_dropped_at_once_and_a_broken_reference_stops_only_drift():
    drift = _drift(window_rows=100)
    for _ in range(50):
        drift.record((np.zeros(10),))
    assert drift.pending_rows < 110  # never more than a window's worth (plus one run) waiting
    assert _figures(drift)["rows"] == 100
    broken = Drift("m v1", drift.reference, lambda parts: [], 100, 0, 0.2, 10)  # fewer columns than distributions
    broken.record((np.zeros(5),))
    assert "error" in _figures(broken) and broken.failed


def test_the_figures_of_several_workers_are_those_of_all_their_rows():
    busy, idle = _drift(window_rows=2000), _drift(window_rows=2000)
    busy.record((np.r_[np.zeros(700), np.ones(700)],))  # 1,400 rows, as the reference: no drift
    idle.record((np.ones(2),))  # 2 rows, all in one bin: alone, PSI of 2.1
    assert _figures(idle)["distributions"]["x"]["psi"] > 1
    counts = [busy.fold(), idle.fold()]
    seen_by_busy, seen_by_idle = busy.figures(counts), idle.figures(counts[::-1])
    assert seen_by_busy["rows"] == seen_by_idle["rows"] == 1402 and seen_by_busy["workers"] == 2
    assert seen_by_busy["distributions"] == seen_by_idle["distributions"]
    assert seen_by_busy["distributions"]["x"]["psi"] < 0.01 and seen_by_busy["drifted"] == []


def test_a_reference_must_name_the_tasks_distributions_in_order():
    card = _drift().reference

    def checked(reference: ReferenceCard, names: list[str]) -> str | None:
        stub = SimpleNamespace(model=SimpleNamespace(card=SimpleNamespace(reference=reference)),
                               drift_names=lambda: names, fail=ModelLoadError)  # fmt: skip
        try:
            Adapter.check_reference(stub)  # type: ignore[arg-type]
        except ModelLoadError as e:
            return str(e)
        return None

    assert checked(card, ["x", "day"]) is None
    assert "this task tracks ['day', 'x']" in checked(card, ["day", "x"])
    one_bin_short = Distribution(name="x", kind="feature", edges=[1.0], fractions=[1.0])
    bad = ReferenceCard(features_from="", outputs_from="", distributions=[one_bin_short])
    assert "one fraction per bin" in checked(bad, ["x"])


def test_waiting_rows_are_binned_in_runs_of_bin_every_requests_not_a_second_at_a_time():
    drift = _drift(window_rows=10_000)
    for i in range(BIN_EVERY * 2 + 4):
        drift.record((np.full(1, i % 2, np.float64),))
    assert len(drift.pending) == 4 and drift.rows_seen == BIN_EVERY * 2  # two runs binned as they came
    figures = _figures(drift)
    assert figures["rows"] == BIN_EVERY * 2 + 4 and figures["distributions"]["x"]["window"] == [0.5, 0.5]
