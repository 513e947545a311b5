"""The monthly loop's mechanics (loadtests/retrain_loop.py) on real sales with tiny trainings: two real
`bentoml serve` runs, feedback, the payload log exported as training data, a canary, and a decision
that follows the online figures it printed. `make retrain-loop` is the full run."""

from __future__ import annotations

import json
import re

from loadtests import retrain_loop
from tests.conftest import REPO


def test_the_loop_serves_feeds_back_retrains_canaries_and_decides_by_the_online_mae(tmp_path, capsys):
    out = tmp_path / "loop"
    served = {p: p.read_bytes() for p in (REPO / "models" / "housing-price").iterdir()}
    assert retrain_loop.main(["--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # February's sales went back as training data, after January's: version 2's file holds both
    january = (out / "sales-through-january.csv").read_text().splitlines()
    february = (out / "sales-through-february.csv").read_text().splitlines()
    assert len(february) == len(january) + retrain_loop.DRY_RUN_SALES
    assert "150 labelled row(s) from 150 of 150 logged request(s)" in printed
    # both versions answered March and the service measured each from the prices posted back
    mae = {v: float(m.replace(",", "")) for v, m in re.findall(r"version (\d): MAE \$([\d,]+)", printed)}
    rows = [int(n.replace(",", "")) for n in re.findall(r"^  version \d: .* over ([\d,]+) sales$", printed, re.M)]
    assert set(mae) == {"1", "2"} and sum(rows) == retrain_loop.DRY_RUN_SALES and min(rows) > 0
    # the decision follows the figures, and the service serves what was decided
    serving = json.loads(printed.strip().splitlines()[-1].split("serving ", 1)[1])
    assert serving["default"] == ("2" if mae["2"] < mae["1"] else "1") and "canary" not in serving
    assert sorted(p.name for p in (out / "models" / "housing-price").iterdir()) == ["1", "2"]
    assert {p: p.read_bytes() for p in (REPO / "models" / "housing-price").iterdir()} == served  # models/ untouched


def test_an_out_folder_the_loop_did_not_make_is_refused_never_deleted(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    try:
        retrain_loop.main(["--dry-run", "--out", str(precious)])
    except SystemExit as e:
        assert "is not a folder this loop made" in str(e)
    else:
        raise AssertionError("the loop ran over a folder it did not make")
    assert (precious / "keep.txt").read_text() == "mine"
