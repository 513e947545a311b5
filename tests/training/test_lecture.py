"""The lecture's charts in --quick mode: both commands run, write their PNG and CSV, and say something."""

from __future__ import annotations

import csv

from training import lecture


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_scale_curve_quick(tmp_path):
    assert lecture.main(["scale", "--quick", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "scale_curve.csv")
    assert (tmp_path / "scale_curve.png").stat().st_size > 10_000
    for task in ("housing-price", "ad-click"):
        models = {r["model"] for r in rows if r["model_of"] == task}
        assert models == {"baseline", "small", "medium", "large"}
        sizes = sorted({int(r["rows"]) for r in rows if r["model_of"] == task})
        assert len(sizes) == 2 and sizes[0] < sizes[1]  # two fractions of the same training split
    housing = [float(r["score"]) for r in rows if r["model_of"] == "housing-price"]
    assert all(-1 < s < 1 for s in housing)


def test_activation_curve_quick_and_reproducible(tmp_path):
    for run in ("a", "b"):
        assert lecture.main(["activation", "--quick", "--out", str(tmp_path / run)]) == 0
    a, b = _rows(tmp_path / "a" / "activation_curve.csv"), _rows(tmp_path / "b" / "activation_curve.csv")
    assert {r["activation"] for r in a} == {"relu", "sigmoid"}
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]  # same seed, same numbers
    assert (tmp_path / "a" / "activation_curve.png").stat().st_size > 10_000
