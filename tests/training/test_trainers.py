"""Each trainer's --dry-run end to end: data, a tiny epoch, export, parity, card, curves; where a run's
model goes (never into the served models directory unless published after passing its bar); how a
run ends on bad data; and --help built from the config's comments."""

from __future__ import annotations

import dataclasses
import filecmp
import re
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from service.cards import read_card
from service.measures import regression_metrics
from service.runtime import load_model, sha256_file
from service.settings import Settings
from service.tasks import ADAPTERS
from tests.conftest import HOUSING_CSV, MODELS, REPO
from training import make_card, train_adclick, train_housing, train_tagger
from training.data_adclick import generate, write_csv
from training.data_housing import load_housing, split_by_date
from training.export import CURVES_FILE, publish
from training.runinfo import field_comments

TRAINERS = [train_housing, train_adclick, train_tagger]


def _check_model_dir(out, name):
    card = read_card(out)
    assert card.name == name
    assert (out / CURVES_FILE).stat().st_size > 1_000
    assert card.parity is not None and card.parity.max_abs_diff <= card.parity.tolerance
    assert card.training["versions"]["torch"].startswith("2.13")
    model = load_model(out)  # the service's own loader accepts it
    assert model.provider == "CPUExecutionProvider"
    adapter = ADAPTERS[card.task](model, Settings())  # and its adapter its reference distributions, for drift
    assert card.reference is not None and [d.name for d in card.reference.distributions] == adapter.drift_names()
    assert all(abs(sum(d.fractions) - 1) < 1e-4 for d in card.reference.distributions)
    return card, model


def test_housing_dry_run(tmp_path):
    assert train_housing.main(["--dry-run", "--out", str(tmp_path)]) == 0
    card, model = _check_model_dir(tmp_path, "housing-price")
    assert card.data.rows == {"train": 500, "validation": 200, "final_fit": 700}
    assert set(card.metrics) == {"model", "baseline", "final_fit"}
    price = model.run(
        np.array([[1800, 3, 2, 7500, 1, 0, 0, 3, 7, 1975, 0, 0, 2015.0]], np.float32), np.array([[98103]])
    )
    assert price.shape == (1, 1) and price[0, 0] > 0


def test_piped_output_is_one_line_per_epoch_and_no_progress_bar(tmp_path):
    """Into a pipe or a file (a CI log, `| tee`), a bar's carriage-return updates would interleave with the
    per-epoch lines: off the terminal there is only the lines."""
    run = subprocess.run([sys.executable, "-m", "training.train_housing", "--dry-run", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "\r" not in run.stderr and "epoch/s" not in run.stderr and "it/s" not in run.stderr, run.stderr[-500:]
    assert "housing-price epoch 1/2:" in run.stdout and "housing-price epoch 2/2:" in run.stdout


def test_adclick_dry_run_generated(tmp_path):
    csv_path = tmp_path / "gen.csv"
    assert train_adclick.main(["--dry-run", "--out", str(tmp_path / "m"), "--generated-csv", str(csv_path)]) == 0
    card, _ = _check_model_dir(tmp_path / "m", "ad-click")
    assert set(card.metrics) == {"model", "baseline", "oracle"}
    assert card.data.files[0]["rows"] == 20_000 and csv_path.exists()


def test_adclick_dry_run_on_a_real_log_csv(tmp_path):
    log = write_csv(generate(5_000, seed=7), tmp_path / "real.csv")
    assert train_adclick.main(["--dry-run", "--data", str(log), "--out", str(tmp_path / "m")]) == 0
    card, _ = _check_model_dir(tmp_path / "m", "ad-click")
    assert card.data.files[0]["path"] == "real.csv"
    assert card.data.rows["train"] + card.data.rows["validation"] == 5_000


def test_tagger_dry_run(tmp_path):
    assert train_tagger.main(["--dry-run", "--out", str(tmp_path)]) == 0
    card, model = _check_model_dir(tmp_path, "image-tagging")
    assert card.image.size == (32, 32) and card.labels[3] == "cat"
    probs = model.run(np.zeros((2, 32, 32, 3), np.uint8))
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size"])
def test_config_flags_are_typed(flag, tmp_path):
    with pytest.raises(SystemExit):
        train_housing.main([flag, "many", "--out", str(tmp_path)])


def test_dry_run_is_deterministic(tmp_path):
    for run in ("a", "b"):
        assert train_housing.main(["--dry-run", "--out", str(tmp_path / run)]) == 0
    a = ort.InferenceSession(str(tmp_path / "a" / "model.onnx"))
    b = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"))
    feed = {
        "numeric": np.array([[1800, 3, 2, 7500, 1, 0, 0, 3, 7, 1975, 0, 0, 2015.0]], np.float32),
        "categorical": np.array([[98103]]),
    }
    assert a.run(None, feed)[0][0, 0] == b.run(None, feed)[0][0, 0]


# --- where a run's model goes ------------------------------------------------------------------------
def _served_copy(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(MODELS / "housing-price", models / "housing-price")
    return models, {p.name: sha256_file(p) for p in (models / "housing-price").iterdir()}


def _unchanged(models, digests) -> bool:
    folder = models / "housing-price"
    return {p.name: sha256_file(p) for p in folder.iterdir()} == digests and sorted(
        p.name for p in models.iterdir()
    ) == ["housing-price"]


def test_a_dry_run_writes_under_build_and_never_into_models(tmp_path, monkeypatch):
    models, digests = _served_copy(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert train_housing.main(["--dry-run", "--data", str(HOUSING_CSV), "--models-dir", str(models)]) == 0
    (run,) = (tmp_path / "build" / "models" / "housing-price").iterdir()
    assert read_card(run).name == "housing-price"
    assert _unchanged(models, digests)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--dry-run", "--publish"], "a dry run's model is never served"),
        (["--out", "{models}/housing-price"], "inside the served models directory"),
        (["--out", "{models}"], "inside the served models directory"),
    ],
)
def test_flags_that_would_write_into_models_are_refused_up_front(tmp_path, capsys, flags, words):
    models, digests = _served_copy(tmp_path)
    argv = [f.format(models=models) for f in flags] + ["--models-dir", str(models)]
    assert train_housing.main(argv) == 2
    assert words in capsys.readouterr().err
    assert _unchanged(models, digests)


def test_a_run_that_fails_its_bar_is_not_published_and_says_where_it_is(tmp_path, capsys):
    models, digests = _served_copy(tmp_path)
    out = tmp_path / "run"
    # One epoch of a tiny net: a real run, far below the R² bar.
    argv = ["--epochs", "1", "--hidden", "4", "--out", str(out), "--models-dir", str(models), "--publish"]
    assert train_housing.main(argv) == 1
    err = capsys.readouterr().err
    assert f"the rejected model is in {out}" in err and "untouched" in err
    assert read_card(out).bar["checks"] and not all(read_card(out).bar["checks"].values())
    assert _unchanged(models, digests)


def test_a_passing_run_is_published_only_when_asked(tmp_path, capsys):
    models, digests = _served_copy(tmp_path)
    # seed 1: not the committed model; --no-refit: one fit is enough to test publishing
    argv = ["--out", str(tmp_path / "run"), "--models-dir", str(models), "--seed", "1", "--no-refit"]
    assert train_housing.main(argv) == 0
    assert "--publish installs it" in capsys.readouterr().out and _unchanged(models, digests)
    assert train_housing.main([*argv, "--publish"]) == 0
    published = read_card(models / "housing-price")
    assert (
        published.onnx_sha256
        == read_card(tmp_path / "run").onnx_sha256
        != read_card(MODELS / "housing-price").onnx_sha256
    )
    assert sorted(p.name for p in models.iterdir()) == ["housing-price"]  # no half-copied folder left
    load_model(models / "housing-price")


def test_publishing_into_a_model_folder_of_versions_adds_the_version_beside_the_others(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(MODELS / "housing-price", models / "housing-price" / "1")
    staged = tmp_path / "run"
    shutil.copytree(MODELS / "housing-price", staged)
    assert publish(staged, models, "housing-price", "2") == models / "housing-price" / "2"
    assert sorted(p.name for p in (models / "housing-price").iterdir()) == ["1", "2"]  # 1 untouched, nothing hidden
    assert filecmp.cmp(models / "housing-price" / "1" / "model.onnx", MODELS / "housing-price" / "model.onnx")


# --- the split -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("split", "words"),
    [
        ("2016-01-01", "no sales from 2016-01-01 on to validate on; the data runs from 2014-05-02 to 2015-03-31"),
        ("2013-01-01", "no sales before 2013-01-01 to train on; the data runs from 2014-05-02 to 2015-03-31"),
        ("banana", "expected a date (2015-02-01)"),
        ("1.5", "between 0 and 1"),
    ],
)
def test_a_split_that_leaves_a_side_empty_is_refused_naming_the_dates(tmp_path, capsys, split, words):
    assert train_housing.main(["--dry-run", "--split", split, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "model.onnx").exists()


def _dry_split(split: str = "2015-02-01"):
    train, val = split_by_date(load_housing(HOUSING_CSV), split)
    return train.take(np.arange(len(train)) < 500), val.take(np.arange(len(val)) < 200)  # as --dry-run takes


@pytest.mark.parametrize("refit", [True, False])
def test_the_exported_model_is_the_refit_on_every_labelled_sale_and_its_card_says_what_each_fit_saw(tmp_path, refit):
    """The validation score comes from the fit that chose the epoch; with --refit (the default) the
    exported graph is a second fit on training and validation rows, and it reproduces the card's
    `final_fit` figures on them; with --no-refit it is the first fit, reproducing `model` on validation."""
    assert train_housing.main(["--dry-run", "--out", str(tmp_path), *([] if refit else ["--no-refit"])]) == 0
    card, model = read_card(tmp_path), load_model(tmp_path)
    train, val = _dry_split()
    rows = train.concat(val) if refit else val
    served = regression_metrics(rows.extra["price"], model.run(rows.numeric, rows.categorical).ravel())
    recorded = card.metrics["final_fit" if refit else "model"]
    assert all(served[k] == pytest.approx(v, rel=1e-4) for k, v in recorded.items()), (served, recorded)
    epoch = card.training["epoch_kept"]
    assert epoch == min(card.training["history"], key=lambda r: r["val_loss"])["epoch"]
    assert (f"epoch {epoch} of 2 chosen" in card.data.split) and (
        ("the final fit: every labelled sale" in card.data.split) == refit
    )
    assert len(card.training.get("final_fit_history", [])) == (epoch if refit else 0)


def test_a_gap_before_validation_and_a_refit_are_refused_together(tmp_path, capsys):
    assert train_housing.main(["--dry-run", "--train-before", "2015-01-01", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--no-refit" in err and len(err.strip().splitlines()) == 1


def test_a_split_by_share_and_a_gap_before_validation(tmp_path):
    argv = ["--dry-run", "--split", "0.2", "--train-before", "2015-01-01", "--no-refit", "--out", str(tmp_path)]
    assert train_housing.main(argv) == 0
    split = read_card(tmp_path).data.split
    assert "train on 2014-05-02 to 2014-12-31" in split and "validate on 2015-01-" in split


# --- data errors: one line, exit 2, no traceback ---------------------------------------------------
def _bad_housing_csv(tmp_path):
    lines = HOUSING_CSV.read_text().splitlines()[:30]
    lines[7] = lines[7].replace(",3,", ",three,", 1)
    path = tmp_path / "houses.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _bad_click_log(tmp_path):
    path = write_csv(generate(200, seed=1), tmp_path / "log.csv")
    text = path.read_text().splitlines()
    text[0] = text[0].replace("clicked", "click")
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.mark.parametrize(
    ("module", "flag", "make_bad", "words"),
    [
        ("train_housing", "--data", _bad_housing_csv, "houses.csv: line 8, column 'bedrooms': bad value 'three'"),
        ("train_adclick", "--data", _bad_click_log, "log.csv: line 1: missing column(s) ['clicked']"),
        ("train_tagger", "--train-tar", lambda p: p / "missing.tar.gz", "missing.tar.gz: no such file"),
    ],
)
def test_bad_data_ends_the_run_with_one_line_and_exit_code_2(tmp_path, module, flag, make_bad, words):
    bad = make_bad(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", f"training.{module}", flag, str(bad), "--dry-run", "--out", str(tmp_path / "m")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], out.stderr[-2000:]
    assert ": " in errors[0].split(words, 1)[1]  # and what to do about it
    assert "Traceback" not in out.stderr


# --- --help from the config's comments --------------------------------------------------------------
@pytest.mark.parametrize("trainer", [*TRAINERS, make_card], ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_every_flag_has_a_description_and_its_default_in_help(trainer, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping: argparse breaks lines at hyphens
    comments = field_comments(trainer.Config)
    with pytest.raises(SystemExit):
        trainer.main(["--help"]) if trainer is not make_card else make_card.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(trainer.Config):
        assert comments.get(field.name), f"{field.name} has no comment to show in --help"
        assert " ".join(comments[field.name].split()) in text, field.name
    assert "(default: 30)" in text or trainer is not train_housing


@pytest.mark.parametrize("trainer", TRAINERS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_the_docstring_names_no_default_that_the_code_does_not_have(trainer):
    defaults = {f.name.replace("_", "-"): f.default for f in dataclasses.fields(trainer.Config)}
    for flag, value in re.findall(r"--([a-z-]+)[ =]([0-9][0-9_,.]*)", trainer.__doc__):
        assert flag in defaults, flag
        assert float(value.replace(",", "").replace("_", "")) == defaults[flag], f"--{flag} {value}"
    for number in re.findall(r"\b\d{1,3}(?:,\d{3})+\b", trainer.__doc__):  # 1,000,000 impressions and the like
        assert int(number.replace(",", "")) in defaults.values(), number
