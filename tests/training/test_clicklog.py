"""Training on click logs as they come (training/train_clicklog.py): each preset on a generated log of
its layout, the same hashing in training and serving on raw IDs, memory bounded whatever an ID's
size, one-line errors with exit code 2 for every data problem, and the torchrun path."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from service.cards import read_card
from service.hashing import bucket, buckets_of
from service.measures import classification_metrics
from service.tasks.tabular.encoder import TabularEncoder
from tests.conftest import REPO
from training import train_adclick
from training.clicklog_data import read_log
from training.clicklog_schema import load_schema
from training.data_adclick import generate, write_csv
from training.data_clicklogs import write_log
from training.train_clicklog import Config, _split


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    impressions = generate(12_000, seed=5)
    return {
        "avazu": write_log(impressions, "avazu", folder / "avazu.csv.gz"),
        "criteo": write_log(impressions, "criteo", folder / "criteo.tsv"),
        "simulated": write_csv(impressions, folder / "simulated.csv"),
    }


def _train(*args: str) -> int:
    return train_adclick.main([*args, "--buckets", "4096", "--baseline-rows", "5000"])


@pytest.mark.parametrize("preset", ["avazu", "criteo", "simulated"])
def test_each_preset_trains_on_a_log_of_its_layout(tmp_path, logs, preset):
    out = tmp_path / "m"
    assert _train("--schema", preset, "--data", str(logs[preset]), "--dry-run", "--out", str(out)) == 0
    card = read_card(out)
    assert card.name == f"ad-click-{preset}" and card.task == "binary_classification"
    assert set(card.metrics) == {"model", "baseline", "oracle"}  # the true probabilities came along
    assert card.parity is not None and card.parity.max_abs_diff <= card.parity.tolerance
    assert card.data.rows["train"] == 9_600 and card.data.rows["validation"] == 2_400
    roles = {c["name"]: c["role"] for c in card.training["schema"]["columns"]}
    assert roles[{"avazu": "click", "criteo": "label", "simulated": "clicked"}[preset]] == "label"
    hashed = [f for f in card.categorical if f.hashing]
    assert hashed and all(f.hashing.buckets == 4096 and f.allowed == (0, 4095) for f in hashed)
    assert card.training["facts"]["peak_rss_mb"] > 0 and card.training["facts"]["rows_per_second"] > 0
    names = [d.name for d in card.reference.distributions]  # for drift: every feature, then the output
    assert names == [f.name for f in card.numeric] + [f.name for f in card.categorical] + ["output"]


def test_training_and_serving_hash_raw_ids_alike(tmp_path):
    """Hex strings, 64-bit integers (sent as JSON numbers or strings), words, empty, long: the codes
    the trainer reads from the log are the codes the service's encoder makes from a request."""
    ids = ["a99f214a", "0000ffff", str(2**64 - 1), str(2**63), "-1", "7", "007", "", "é" * 300, "x" * 257]
    lines = ["click,hour,site_id,C14"] + [f"{i % 2},14102100,{v},{v}" for i, v in enumerate(ids)]
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    schema_file = tmp_path / "s.toml"
    schema_file.write_text('[columns]\nclick = "label"\nhour = { role = "timestamp", format = "YYMMDDHH" }\n'
                           'site_id = { role = "id", optional = true, buckets = 1000 }\n'
                           'C14 = { role = "id", optional = true, buckets = 1000 }\n')  # fmt: skip
    schema = load_schema(str(schema_file))
    trained = read_log(path, schema, quiet=True).codes
    assert trained[:, 0].tolist() != trained[:, 1].tolist()  # each column has its own salt

    # the card the trainer would write, and the service's encoder built from it
    from training.train_clicklog import _code_cards

    seen = [np.ones(1000, bool), np.ones(1000, bool)]
    cards = _code_cards(schema, seen, read_log(path, schema, quiet=True))
    from service.cards import ModelCard, TensorSpec

    card = ModelCard(
        name="t", version="1", task="binary_classification", description="t", onnx_sha256="", opset=17,
        inputs=[TensorSpec(name="numeric", dtype="float32", shape=["N", 0]),
                TensorSpec(name="categorical", dtype="int64", shape=["N", 2])],
        outputs=[TensorSpec(name="p", dtype="float32", shape=["N", 1])], categorical=cards,
    )  # fmt: skip
    encoder = TabularEncoder(card)
    as_json = [int(v) if v.lstrip("-").isdigit() and not v.startswith("0") else v for v in ids]
    for values in (ids, as_json):  # strings as in the log, or numbers where JSON would carry numbers
        rows = [{"site_id": v, "C14": v} for v in values]
        few = np.concatenate([encoder.encode(rows[i : i + 1])[1] for i in range(len(rows))])
        many = encoder.encode(rows * 2)[1][: len(rows)]  # the batch path (more than a few rows)
        assert few.tolist() == many.tolist() == trained.tolist()
    salts = [f.hashing.salt for f in cards]
    assert [bucket(ids[0], s, 1000) for s in salts] == trained[0].tolist()
    assert buckets_of(ids, salts[0], 1000).tolist() == trained[:, 0].tolist()


def test_the_hash_is_pinned():
    """A change to the hash would silently re-bucket every served model's IDs: these values are fixed."""
    assert [bucket(v, 0, 1 << 18) for v in ("a99f214a", 18446744073709551615, "")] == [
        bucket("a99f214a", 0, 1 << 18), bucket("18446744073709551615", 0, 1 << 18), bucket("", 0, 1 << 18)
    ]  # fmt: skip
    assert bucket("a99f214a", 0, 1 << 18) == PINNED["a99f214a"]
    assert bucket(18446744073709551615, 123, 1 << 20) == PINNED["u64"]
    assert bucket("\ud800", 0, 1000) == buckets_of(["\ud800"], 0, 1000)[0]  # JSON may carry a lone surrogate


PINNED = {"a99f214a": 51989, "u64": 139577}


def test_64_bit_and_hex_ids_take_memory_by_buckets_not_by_their_values(tmp_path):
    """What crashed the old trainer: an embedding table sized by the largest ID (2 billion entries)."""
    rng = np.random.default_rng(0)
    n = 20_000
    huge = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    lines = ["click,hour,big_id,hex_id"] + [
        f"{int(rng.random() < 0.3)},{14102100 + (i * 24 // n)},{h},{h:016x}" for i, h in enumerate(huge.tolist())
    ]
    path = tmp_path / "ids.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    schema = tmp_path / "ids.toml"
    schema.write_text('id_buckets = 512\n[columns]\nclick = "label"\nhour = { role = "timestamp", format = "YYMMDDHH" }'
                      '\nbig_id = "id"\nhex_id = "id"\n')  # fmt: skip
    out = tmp_path / "m"
    args = ["--schema", str(schema), "--data", str(path), "--dry-run", "--out", str(out), "--min-count", "1"]
    assert train_adclick.main([*args, "--baseline-rows", "5000"]) == 0
    card = read_card(out)
    assert [f.hashing.buckets for f in card.categorical] == [512, 512]
    assert card.training["parameters"] < 2 * 513 * 17 + 200_000  # embeddings of 512 rows each, plus the layers
    assert max(huge) > 2**63  # the IDs really were 64-bit


def _fails(capsys, *args: str) -> str:
    """Runs the trainer expecting exit code 2 and one error line on stderr (besides any progress bar),
    no traceback; returns the line."""
    assert train_adclick.main(list(args)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_data_problems_are_one_line_naming_file_line_column_and_what_to_do(tmp_path, capsys, logs):
    out = tmp_path / "out"
    log = tmp_path / "log.csv"
    header = "click,hour,site_id,age"
    schema = tmp_path / "s.toml"
    schema.write_text('[columns]\nclick = "label"\nhour = { role = "timestamp", format = "YYMMDDHH" }\nsite_id = "id"\n'
                      'age = { role = "numeric" }\n')  # fmt: skip
    good = [f"{i % 2},141021{i % 24:02d},s{i % 7},{20 + i % 30}" for i in range(200)]
    common = ["--schema", str(schema), "--data", str(log), "--out", str(out), "--dry-run"]

    def broken(line_no: int, text: str) -> str:
        rows = list(good)
        rows[line_no - 2] = text  # line 1 is the header
        log.write_text("\n".join([header, *rows]) + "\n")
        return _fails(capsys, *common)

    message = broken(7, "1,14102105,s1,twenty")
    assert all(s in message for s in (str(log), "line 7", "'age'", "'twenty'", "not a number"))
    message = broken(9, "1,14139905,s1,30")  # month 39
    assert all(s in message for s in ("line 9", "'hour'", "YYMMDDHH"))
    message = broken(4, "yes,14102105,s1,30")
    assert all(s in message for s in ("line 4", "'click'", "0 (no click) or 1"))
    message = broken(5, "1,14102105,,30")
    assert all(s in message for s in ("line 5", "'site_id'", "optional = true"))
    message = broken(6, "1,14102105,s1,")
    assert all(s in message for s in ("line 6", "'age'", "missing = <number>"))
    log.write_text("click,hour,site\n1,14102100,a\n")
    message = _fails(capsys, *common)
    assert all(s in message for s in ("line 1", "'site_id'", "not in the header"))
    log.write_text("\n".join([header, *[f"0,141021{i % 24:02d},s1,30" for i in range(700)]]) + "\n")
    assert "no clicks" in _fails(capsys, *common)
    log.write_text(header + "\n")
    assert "no data rows" in _fails(capsys, *common)
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(logs["avazu"].read_bytes()[:50_000])
    assert "damaged" in _fails(capsys, "--schema", "avazu", "--data", str(truncated), "--out", str(out))
    assert "neither a preset" in _fails(capsys, "--schema", "nope", "--data", str(log), "--out", str(out))
    for text, needle in [
        ('[columns]\nclick = "label"\nx = "weird"', "role 'weird'"),
        ('[columns]\nx = "id"', "role 'label'"),
        ('[columns]\nclick = "label"\nt = { role = "timestamp", format = "unix" }', "format 'unix'"),
        ('[columns]\nclick = "label"\nc = { role = "categorical" }', "lists its values"),
        ('[columns]\nclick = "label"\nx = { role = "id", values = ["a"] }', "option 'values'"),
        ("[columns\n", "not valid TOML"),
    ]:
        schema.write_text(text)
        assert needle in _fails(capsys, *common), text
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written


def test_a_constant_column_is_said_once_and_trains(tmp_path, caplog, logs):
    """Avazu's C1 and device_conn_type are constant in our layout, as in the real log."""
    with caplog.at_level("WARNING"):
        assert _train("--schema", "avazu", "--data", str(logs["avazu"]), "--dry-run", "--out", str(tmp_path)) == 0
    assert "'C1' is constant" in caplog.text and "'device_conn_type' is constant" in caplog.text


@pytest.mark.skipif(not shutil.which("torchrun", path=os.path.dirname(sys.executable)), reason="needs torchrun")
def test_torchrun_with_two_processes_reaches_the_single_process_auc(tmp_path):
    """Two gloo processes, each holding every other row of the log, gradients averaged by DDP, against
    one process on the whole log: both exported models scored on the same held-out rows; the logistic
    baseline fit on every process's rows."""
    log_path = write_csv(generate(150_000, seed=7), tmp_path / "log.csv")
    args = ["-m", "training.train_adclick", "--schema", "simulated", "--data", str(log_path), "--buckets", "4096",
            "--baseline-rows", "70000", "--epochs", "2", "--batch-size", "1024"]  # fmt: skip
    torchrun = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "ddp")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode in (0, 1), run.stderr[-3000:]  # 1: a small run's bar may fail; the model is written
    single = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert single.returncode in (0, 1), single.stderr[-3000:]
    ddp, one = read_card(tmp_path / "ddp"), read_card(tmp_path / "one")
    assert ddp.training["facts"]["processes"] == 2 and one.training["facts"]["processes"] == 1
    assert ddp.training["facts"]["rows_kept"] == 75_000 and one.training["facts"]["rows_kept"] == 150_000
    # the logistic regression fit on both processes' rows (35,000 each), not on the first one's 60,000
    assert ddp.data.rows["baseline_fit"] == one.data.rows["baseline_fit"] == 70_000
    json.dumps(ddp.training)  # the card holds plain JSON

    schema = load_schema("simulated").with_buckets(4096)
    data = read_log(log_path, schema, quiet=True)
    _, held_out = _split(Config(data=log_path), schema, data)
    feeds = {"numeric": held_out.numeric, "categorical": held_out.codes.astype(np.int64)}
    auc = {k: classification_metrics(held_out.label, ort.InferenceSession(str(tmp_path / k / "model.onnx"))
                                     .run(None, feeds)[0][:, 0])["auc"] for k in ("ddp", "one")}  # fmt: skip
    assert abs(auc["ddp"] - auc["one"]) <= 0.005, auc
    assert auc["ddp"] > 0.7  # and it learned


def test_too_little_data_is_one_clear_error_never_a_silent_untrained_model(tmp_path, capsys):
    """100 rows (80 to train): a 2,048 batch used to take 0 optimiser steps, print train_loss=0.0000
    and export an untrained model; now one line, exit 2, nothing written."""
    log_path = write_csv(generate(2_000, seed=3), tmp_path / "log.csv")
    lines = log_path.read_text().splitlines()
    (tmp_path / "tiny.csv").write_text("\n".join(lines[:101]) + "\n")
    out = tmp_path / "out"
    message = _fails(capsys, "--schema", "simulated", "--data", str(tmp_path / "tiny.csv"), "--out", str(out))
    assert "training rows" in message and "at least 500" in message, message
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_the_wide_part_starts_as_the_tuned_logistic_regression_and_the_best_epoch_is_kept(tmp_path, logs):
    """The network with its deep head at zero answers as the fitted logistic regression (its numbers
    rescaled: the Criteo layout has 13); the exported model is the epoch with the lowest held-out log
    loss, and on a small log it does not fall below the regression it holds."""
    from training.train_clicklog import _build, _plan, logistic_baseline, predict, warm_start

    cfg = Config(schema="criteo", data=logs["criteo"], buckets=4096)
    schema = load_schema("criteo").with_buckets(4096)
    train, val = _split(cfg, schema, read_log(logs["criteo"], schema, quiet=True))
    _plan(cfg, len(train), 0)
    net, _ = _build(cfg, schema, train)
    baseline = logistic_baseline(schema, train, val)
    linear = warm_start(net, baseline)
    net.load_state_dict(linear)
    assert np.abs(predict(net, val) - baseline.clicks).max() < 1e-4

    out = tmp_path / "m"
    assert _train("--schema", "criteo", "--data", str(logs["criteo"]), "--out", str(out), "--epochs", "4") in (0, 1)
    card = read_card(out)
    facts, history = card.training["facts"], card.training["history"]
    assert card.training["config"]["batch_size"] == 64  # 9,600 training rows: the smallest batch
    assert 0 <= facts["epoch_kept"] <= facts["epochs_run"] == len(history)
    losses = [h["val_loss"] for h in history]
    if facts["epoch_kept"]:  # the kept epoch's figures are the card's, and no epoch had a lower loss
        kept = history[facts["epoch_kept"] - 1]
        assert card.metrics["model"]["auc"] == pytest.approx(kept["auc"], abs=1e-6) and kept["val_loss"] == min(losses)
    assert card.metrics["model"]["auc"] >= card.metrics["baseline"]["auc"] - 0.005


@pytest.mark.skipif(not shutil.which("torchrun", path=os.path.dirname(sys.executable)), reason="needs torch")
def test_a_missed_bar_under_the_launcher_is_one_line_and_exit_1_from_every_process(tmp_path, logs):
    """Two processes on the Avazu layout (no numbers: a wide part with an unused parameter once stopped
    DistributedDataParallel) and 12,000 rows, where no model comes within 0.01 of the oracle: the
    trainer says the bar failed, the launcher one line more, exit 1, and no traceback (torchrun's own
    printed its ChildFailedError's)."""
    run = subprocess.run(
        [sys.executable, "-m", "training.launch", "--nproc_per_node=2", "-m", "training.train_adclick", "--schema",
         "avazu", "--data", str(logs["avazu"]), "--buckets", "4096", "--epochs", "2", "--out", str(tmp_path / "m")],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "ChildFailedError" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "exited with code 1" in errors[0], run.stderr[-3000:]
    assert "bar FAILED" in run.stderr and "[FAIL] auc" in run.stdout
    assert (tmp_path / "m" / "model.onnx").is_file()  # the rejected model is kept for a look, never published
