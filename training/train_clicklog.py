"""Train a click model on a log as it comes, by its declared schema; export it with its card.

    python -m training.train_adclick --schema avazu --data train.csv.gz
    python -m training.train_adclick --schema criteo --data day_0.tsv.gz --limit 20000000
    python -m training.train_adclick --schema my_log.toml --data log.csv
    python -m training.launch --nproc_per_node=2 -m training.train_adclick --schema avazu --data train.csv.gz

The schema (a preset in training/schemas/ or a TOML file; docs/clicklogs.md) says which column is the
label, the time, a number, a closed category or an open ID. IDs are hashed into a bounded number of
buckets, the same way the service hashes a request's raw ID (service/hashing.py). The latest
`--holdout` share of rows by time (file order without a timestamp) is held out; the model must not fall
below a logistic regression tuned on it, and be calibrated, each within the statistical error of the
held-out split's size (training/intervals.py). On a small log the network holds that logistic
regression as its wide part, started from its fitted weights (training/models.py ClickNet); batch
size, rate and epochs follow the log's size, and the epoch with the lowest held-out log loss is the
one exported (docs/clicklogs.md#small-logs). Under torchrun each process holds every n-th row
of the log and DistributedDataParallel averages the gradients (gloo on CPUs, nccl on GPUs); the first
process scores its share of the held-out rows, compares and exports.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from service import hashing
from service.cards import ApiCard, CategoricalCard, DataCard, HashingCard, NumericCard
from service.measures import calibration_error, classification_metrics
from training import distributions
from training.clicklog_data import ClickLog, code_columns, read_log, salt_of
from training.clicklog_schema import Schema, load_schema
from training.contract import AD_CLICK, CATEGORICAL_INPUT, NUMERIC_INPUT
from training.export import finish, run_dir, save_model
from training.intervals import auc_difference, calibration_noise
from training.loop import fit
from training.models import ClickNet, CodeLookup, Logits
from training.runinfo import TrainingDataError, bars, config_dict, library_versions, sha256_file

log = logging.getLogger(__name__)
AUC_GAP_BAR = 0.01  # to the oracle, where the log's true probabilities are known
CALIBRATION_BAR = 0.01  # or what a calibrated model shows on the held-out rows, when that is more
Z_ONE_SIDED = 1.645  # 95%: "not below the logistic regression" allows 1.645 standard errors of the difference
MIN_TRAIN_ROWS = 500  # fewer: not a click model, whatever the settings (one clear error, never a 0-step run)
MIN_HELD_OUT_CLICKS = 10  # fewer: neither AUC nor calibration can be told from noise
PATIENCE = 2  # epochs without a lower held-out log loss before training stops
WARM_ROWS = 200_000  # logs of at most this many training rows start from the fitted logistic regression
EVAL_CHUNK = 65_536  # rows per forward pass when scoring: memory stays flat on a 4-million-row holdout
BIN_SAMPLE = 1_000_000  # rows the numbers' quantile bins are taken from
IGNORED_ROLES = ("ignore", "label", "timestamp", "probability")  # a log line's columns a request may carry unread
NUMERIC_BOUND = 1e15  # numbers a request may send: any a log could hold; outside the seen range: a warning


@dataclass
class Config:
    schema: str = ""  # a preset (avazu, criteo, simulated) or a schema TOML file
    data: Path | None = None  # the log: CSV or TSV, plain or gzip
    limit: int = 0  # read only the first LIMIT rows (0: the whole log)
    holdout: float = 0.2  # the latest share of rows, by timestamp (file order without one), is held out
    name: str = ""  # the served model's name (default: the schema's)
    buckets: int = 0  # hash buckets per ID column (0: the schema's, default 262144): bounds memory
    out: Path | None = None  # where the model is written; default build/models/<name>/<UTC time>
    publish: bool = False  # once the card passes its bar, install it as <models-dir>/<name>[/<version>]
    models_dir: Path = Path("models")  # the served models directory (never written without --publish)
    epochs: int = 0  # most epochs (0: from the log's size, 5 to 30); stops after PATIENCE epochs without gain
    batch_size: int = 0  # rows per Adam step, all processes together (0: from the log's size, 64 to 2048)
    lr: float = 0.0  # Adam; cosine-decayed over the run (0: 3e-3 at a 2,048 batch, by the square root below)
    weight_decay: float = 1e-5  # Adam's (coupled) L2: pulls the rows of rare IDs, seldom in a batch, to zero
    hidden: str = "128,64"  # the MLP's ReLU layers (256,128 measured no better)
    # A logistic regression on the same inputs added to the logit (wide & deep), started from the fitted
    # one: "auto" on logs of at most WARM_ROWS training rows, where the MLP has little to learn from.
    wide: str = "auto"  # auto, on, off
    cross_layers: int = 0  # DCN-v2 cross layers beside the MLP (measured no better on our layouts)
    embedding_dim: int = 16  # capped at rows + 1 per column
    numeric_bins: int = 20  # each number also enters as its quantile bin (0: as a scaled number only)
    min_count: int = 5  # buckets seen fewer times share the unknown row, as unseen IDs do at serving time
    unknown_rate: float = 0.01  # share of codes hidden in training so the unknown row learns
    baseline_rows: int = 2_000_000  # the logistic regression fits on the latest N training rows (sklearn: 1 core)
    threads: int = 0  # 0: torch's default (all cores, shared out between torchrun's processes)
    seed: int = 0
    version: str = "1"  # written into the card
    dry_run: bool = False  # the first 20k rows, one epoch: seconds, for tests; never published


def train(cfg: Config) -> int:
    world, rank = _distributed()
    try:
        return _train_and_export(cfg, world, rank)
    finally:
        # Each process leaves the group before Python exits: gloo's threads, left to the interpreter's
        # teardown, can abort the process (SIGABRT, "terminate called without an active exception";
        # once in CI, the second of two processes after a missed bar; pytorch/pytorch#190489).
        if dist.is_initialized():
            dist.destroy_process_group()


def _train_and_export(cfg: Config, world: int, rank: int) -> int:
    if not cfg.schema or cfg.data is None:
        raise TrainingDataError("--schema and --data: give both (a preset or TOML file, and the log)")
    schema = load_schema(cfg.schema)
    name = cfg.name or schema.name
    out = run_dir(cfg, name)
    if cfg.dry_run:
        cfg.limit = cfg.limit or 20_000
    if cfg.buckets:
        schema = schema.with_buckets(cfg.buckets)
    started = time.time()
    data = read_log(cfg.data, schema, cfg.limit, quiet=rank > 0, shard=(rank, world))
    train_rows, val = _split(cfg, schema, data)
    _plan(cfg, len(train_rows) * world, rank)
    _warn_constant(cfg.data, schema, train_rows)
    net, seen = _build(cfg, schema, train_rows)
    warm, linear = None, None
    # The network starts as the logistic regression (the first process's; DistributedDataParallel copies
    # its start to the others).
    if cfg.wide == "on" and rank == 0:
        warm = logistic_baseline(schema, train_rows, val)
        linear = warm_start(net, warm)
    history, train_seconds, kept_epoch = _train(cfg, net, train_rows, val, world, rank, linear)
    if rank > 0:
        _fit_rows(cfg, train_rows, world, rank)  # its share of the logistic regression's rows, to the first
        return _agreed(None, world)
    val_clicks = predict(net, val)
    final = classification_metrics(val.label, val_clicks)
    # What the card needs from the training rows is taken now, and copies of the baseline's rows and
    # the held-out rows are all that is kept: the log's arrays go back to the system before the
    # logistic regression builds its matrix (peak RSS: docs/clicklogs.md).
    numeric_cards, code_cards = _numeric_cards(schema, train_rows), _code_cards(schema, seen, data)
    n_train = len(train_rows)
    references = distributions.tabular(
        numeric_cards, train_rows.numeric, code_cards, train_rows.codes,
        val_clicks, f"training split, {n_train:,} rows", f"held-out split, {len(val):,} rows", cfg.seed,
    )  # fmt: skip
    same_rows = world == 1 and warm is not None and warm.rows == min(n_train, cfg.baseline_rows)  # reused
    fit_rows = None if same_rows else _fit_rows(cfg, train_rows, world, rank)
    val = val.take(np.arange(len(val)))
    read_facts = data.facts
    del data, train_rows
    fitted = warm if fit_rows is None else logistic_baseline(schema, fit_rows, val)
    assert fitted is not None
    del fit_rows
    c_value = fitted.c
    metrics = {"model": final, "baseline": fitted.metrics}
    checks = bar_checks(val.label, val_clicks, fitted.clicks)
    if val.p_true is not None:
        metrics["oracle"] = oracle = classification_metrics(val.label, val.p_true)
        checks[f"auc {final['auc']:.4f} within {AUC_GAP_BAR} of oracle {oracle['auc']:.4f}"] = (
            oracle["auc"] - final["auc"] <= AUC_GAP_BAR
        )
    facts = {
        **read_facts,
        "train_seconds": round(train_seconds, 1),
        "trained_rows_per_second": round(len(history) * n_train / max(train_seconds, 1e-9)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "processes": world,
        "epochs_run": len(history),
        "epoch_kept": kept_epoch,  # the lowest held-out log loss: its weights are the exported model's
    }
    log.info("peak RSS %s MB; read %s rows/s; trained %s rows/s", facts["peak_rss_mb"], f"{facts['rows_per_second']:,}",
             f"{facts['trained_rows_per_second']:,}")  # fmt: skip
    card_fields = {
        "name": name,
        "version": cfg.version,
        "task": "binary_classification",
        "description": schema.description,
        "output_unit": "probability",
        # A raw log line is sent as it is: its columns the model does not read are taken and ignored.
        "api": ApiCard(ignored_fields=[c.name for c in schema.columns if c.role in IGNORED_ROLES]),
        "numeric": numeric_cards,
        "categorical": code_cards,
        "reference": references,
        "data": DataCard(
            files=[{"path": cfg.data.name, "sha256": sha256_file(cfg.data), "rows": read_facts["rows"]}],
            split=f"the latest {cfg.holdout:.0%} of rows "
            + ("by timestamp" if schema.timestamp else "in file order (the schema has no timestamp)")
            + " held out; the logistic regression's L2 strength was chosen on them"
            + (
                f"; rows counted and scored: the first of {world} processes' share; the logistic regression "
                "fit on every process's rows"
                if world > 1
                else ""
            ),
            rows={
                "train": n_train,
                "validation": len(val),
                "validation_clicks": int(val.label.sum()),
                "baseline_fit": fitted.rows,
            },  # fmt: skip
        ),
        "metrics": metrics,
        "bar": {
            "description": f"AUC not below a logistic regression on the hashed one-hot features (L2 chosen on "
            f"the held-out rows: C={c_value:g}) by more than {Z_ONE_SIDED} standard errors of the difference "
            f"(DeLong, the same rows), calibration error <= {CALIBRATION_BAR} or the 95th percentile a "
            "calibrated model shows on the held-out rows, whichever is larger (20 equal-count bins)"
            + (f", AUC within {AUC_GAP_BAR} of the oracle" if val.p_true is not None else ""),
            "checks": checks,
        },
        "training": {
            "config": config_dict(cfg),
            "schema": {
                "source": schema.source,
                "delimiter": schema.delimiter,
                "header": schema.header,
                "columns": [_declared(c) for c in schema.columns],
            },  # fmt: skip
            "facts": facts,
            "versions": library_versions(),
            "history": history,
            "duration_s": round(time.time() - started, 1),
            "parameters": sum(p.numel() for p in net.parameters()),
        },
    }
    parity = {NUMERIC_INPUT: torch.from_numpy(val.numeric[:20_000].copy()),
              CATEGORICAL_INPUT: torch.from_numpy(val.codes[:20_000].astype(np.int64))}  # fmt: skip
    staging = out.parent / f".{out.name}.partial"  # nothing half-written at --out if export fails
    shutil.rmtree(staging, ignore_errors=True)
    try:
        card = save_model(net, parity, AD_CLICK.output, staging, 1e-5, card_fields, history, "auc")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _agreed(finish(card, out, cfg), world)


def _distributed() -> tuple[int, int]:
    """(world size, rank): under torchrun, joins the process group (gloo on CPUs, nccl on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # The other processes wait while the first scores, fits the logistic regression and exports:
        # on millions of rows that can pass the default 30 minutes.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timedelta(hours=6))
        if not int(os.environ.get("OMP_NUM_THREADS", "0")):
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return world, (dist.get_rank() if world > 1 else 0)


def _split(cfg: Config, schema: Schema, data: ClickLog) -> tuple[ClickLog, ClickLog]:
    """The latest `holdout` share by time (reordered in place, column by column: no second copy of
    the log), or by file order without a timestamp."""
    if data.time is not None and np.any(np.diff(data.time) < 0):
        order = np.argsort(data.time, kind="stable")
        for j in range(data.codes.shape[1]):
            data.codes[:, j] = data.codes[order, j]
        for j in range(data.numeric.shape[1]):
            data.numeric[:, j] = data.numeric[order, j]
        data.label, data.time = data.label[order], data.time[order]
        data.p_true = None if data.p_true is None else data.p_true[order]
    if data.time is None:
        log.info("%s: no timestamp in the schema: the latest %.0f%% in file order are held out", cfg.data,
                 cfg.holdout * 100)  # fmt: skip
    cut = int(len(data) * (1 - cfg.holdout))
    train, val = data.take(slice(0, cut)), data.take(slice(cut, None))
    world = dist.get_world_size() if dist.is_initialized() else 1
    if len(train) * world < MIN_TRAIN_ROWS:
        raise TrainingDataError(
            f"{cfg.data}: {len(train) * world:,} training rows (of {len(data) * world:,}, --holdout {cfg.holdout:g}): "
            f"a click model needs at least {MIN_TRAIN_ROWS:,}; give a longer log"
        )
    if 0 < int(val.label.sum()) < MIN_HELD_OUT_CLICKS:
        raise TrainingDataError(
            f"{cfg.data}: {int(val.label.sum())} clicks in the held-out split ({len(val):,} rows): at least "
            f"{MIN_HELD_OUT_CLICKS} are needed to measure the model; give a longer log or a larger --holdout"
        )
    for part, what in ((train, "training"), (val, "held-out")):
        clicks = int(part.label.sum())
        if clicks in (0, len(part)):
            raise TrainingDataError(
                f"{cfg.data}: the {what} split ({len(part):,} rows) has {'no' if not clicks else 'only'} clicks: "
                "nothing to learn or measure; give a longer log or change --holdout"
            )
    return train, val


def _agreed(code: int | None, world: int) -> int:
    """The first process's exit code, for every process: a missed bar is exit 1 from each of them (the
    others used to exit 0 while the first exited 1)."""
    if world == 1:
        assert code is not None
        return code
    box = [code]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])  # type: ignore[arg-type]


def _fit_rows(cfg: Config, train: ClickLog, world: int, rank: int) -> ClickLog | None:
    """The logistic regression's rows: the latest `baseline_rows` training rows (copies). Under torchrun
    every process sends the latest of its share to the first, which fits on all of them (it used to
    fit on its own share only: half the rows with two processes); elsewhere None."""
    n = len(train)
    mine = train.take(np.arange(max(0, n - cfg.baseline_rows // world), n))
    if world == 1:
        return mine
    shares: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object((mine.numeric, mine.codes, mine.label), shares, dst=0)
    if shares is None:
        return None
    numeric, codes, label = (np.concatenate([share[k] for share in shares]) for k in range(3))
    return ClickLog(numeric, codes, label, None, None, train.facts)


def _plan(cfg: Config, n_train: int, rank: int) -> None:
    """Batch size, learning rate and most epochs from the number of training rows, where not given.
    Sized for millions of rows, a 2,048 batch gave a 6,500-row log 15 optimiser steps in all. Here a
    batch is about n/400 rows (a power of two, 64 to 2,048: 6,500 rows -> 64, 2 M -> 2,048), the rate
    3e-3 at 2,048 scaled by the square root of the batch (Adam's noise grows as batches shrink), and an
    epoch cap that gives a small log ~10,000 steps in all (5 to 30 epochs); early stopping on the
    held-out log loss ends most runs before it."""
    if cfg.wide not in ("auto", "on", "off"):
        raise TrainingDataError(f"--wide {cfg.wide!r}: auto, on or off")
    if cfg.wide == "auto":
        # On 2 M simulated rows the wide part measured no better (held-out AUC 0.7528 after 3 of 4 epochs
        # started from the regression, 0.7517 after 3 of 5 from zero, against 0.7520 without it after 5;
        # oracle 0.7580), and its start needs a regression fit on every training row before training
        # (memory and time on 20 M rows): large logs train the measured network of docs/clicklogs.md.
        cfg.wide = "on" if n_train <= WARM_ROWS else "off"
    if not cfg.batch_size:
        cfg.batch_size = int(min(2048, max(64, 2 ** round(np.log2(max(n_train, 1) / 400)))))
        if cfg.dry_run:
            cfg.batch_size = min(cfg.batch_size, 512)
    if not cfg.lr:
        cfg.lr = 3e-3 * (cfg.batch_size / 2048) ** 0.5
    if cfg.dry_run:
        cfg.epochs = 1
    elif not cfg.epochs:  # large logs: the measured 5
        cfg.epochs = (
            int(min(30, max(5, np.ceil(10_000 / max(n_train // cfg.batch_size, 1))))) if n_train <= WARM_ROWS else 5
        )
    if rank == 0:
        log.info("%s training rows: batch %s, learning rate %.2g, at most %s epochs", f"{n_train:,}", cfg.batch_size,
                 cfg.lr, cfg.epochs)  # fmt: skip


def _warn_constant(path: Path, schema: Schema, train: ClickLog) -> None:
    """A constant column carries nothing; it is kept (it may vary when served) and said once."""
    names = [c.name for c in schema.role("numeric")] + [c.name for c in code_columns(schema)]
    columns = [train.numeric[:, j] for j in range(train.numeric.shape[1])]
    columns += [train.codes[:, j] for j in range(train.codes.shape[1])]
    for name, column in zip(names, columns, strict=True):
        if column.min() == column.max():
            log.warning("%s: column %r is constant in the training split: it carries nothing (role \"ignore\" "
                        "drops it)", path, name)  # fmt: skip


def _build(cfg: Config, schema: Schema, train: ClickLog) -> tuple[ClickNet, list[np.ndarray]]:
    """The net, with scaling statistics and each column's rows taken from the training split: a code
    seen at least `min_count` times gets its own embedding row, everything else shares row 0."""
    lookups, seen, deep_rows = [], [], []
    for j, c in enumerate(code_columns(schema)):
        size = c.buckets if c.role == "id" else len(c.values)
        counts = np.bincount(train.codes[:, j], minlength=size)
        if dist.is_initialized():  # every process the same rows: counted over all of the log
            counts_all = torch.from_numpy(counts)
            dist.all_reduce(counts_all)
            counts = counts_all.numpy()
        frequent = counts >= (cfg.min_count if c.role == "id" else 1)
        if cfg.wide == "on":  # the wide part weighs every code the training rows hold, as the regression does
            held = counts >= 1
            lookups.append(CodeLookup(0, torch.from_numpy(np.cumsum(held) * held)))
            deep_rows.append(torch.from_numpy(np.concatenate(([0], (np.cumsum(frequent) * frequent)[held]))))
        else:
            lookups.append(CodeLookup(0, torch.from_numpy(np.cumsum(frequent) * frequent)))
        seen.append(frequent)
    log_mask = [c.log for c in schema.role("numeric")]
    stats, edges = [], []  # column by column: no float64 copy of the whole log
    quantiles = np.linspace(0, 1, cfg.numeric_bins + 1)[1:-1]
    sample = np.random.default_rng(cfg.seed).permutation(len(train))[:BIN_SAMPLE]
    for j, log_scaled in enumerate(log_mask):
        raw = train.numeric[:, j]
        edges.append(torch.from_numpy(np.unique(np.quantile(raw[sample], quantiles, method="lower"))))
        x = np.log1p(np.clip(raw, 0, None), dtype=np.float64) if log_scaled else raw.astype(np.float64)
        stats.append((x.mean(), max(x.std(ddof=1), 1e-6)))
    if dist.is_initialized():  # the first process's share (a sample of the whole log) sets them for all
        shared = [(stats, edges)]
        dist.broadcast_object_list(shared, src=0)
        stats, edges = shared[0]
    mean, std = (torch.tensor([s[k] for s in stats], dtype=torch.float64) for k in (0, 1))
    dims = [min(cfg.embedding_dim, int(f.sum()) + 1) for f in seen]
    hidden = tuple(int(h) for h in cfg.hidden.split(",") if h)
    torch.manual_seed(cfg.seed)
    net = ClickNet(mean, std, torch.tensor(log_mask, dtype=torch.bool), lookups, dims, hidden, cfg.cross_layers,
                   edges if cfg.numeric_bins else None, wide=cfg.wide == "on",
                   deep_rows=deep_rows if cfg.wide == "on" else None)  # fmt: skip
    return net, seen


def _train(cfg: Config, net: ClickNet, train: ClickLog, val: ClickLog, world: int, rank: int,
           linear: dict[str, torch.Tensor] | None = None):  # fmt: skip
    """Adam on shuffled batches. Under torchrun each process holds its share of the log and draws its
    part of every batch from it; DistributedDataParallel averages the gradients, so a step is one
    batch of `batch_size` rows as in one process, and every process takes the same number of steps."""
    model = Logits(net)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    order_gen = torch.Generator().manual_seed(cfg.seed + rank)
    mask_gen = torch.Generator().manual_seed(cfg.seed + 1000 + rank)
    share = cfg.batch_size // world
    per_epoch = torch.tensor(len(train) // share)
    if world > 1:
        dist.all_reduce(per_epoch, op=dist.ReduceOp.MIN)  # shares differ by a row or so
    steps = cfg.epochs * int(per_epoch)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))

    def batches(_epoch: int):
        order = torch.randperm(len(train), generator=order_gen).numpy()
        starts = range(0, int(per_epoch) * share, share)
        for i in tqdm(starts, desc=f"epoch {_epoch + 1}", unit="batch", leave=False, disable=rank > 0 or not bars()):
            idx = np.sort(order[i : i + share])
            codes = torch.from_numpy(train.codes[idx].astype(np.int64))
            if cfg.unknown_rate:
                codes[torch.rand(codes.shape, generator=mask_gen) < cfg.unknown_rate] = -1
            labels = torch.from_numpy(train.label[idx, None].astype(np.float32))
            yield torch.from_numpy(train.numeric[idx]), codes, labels

    def loss_fn(batch):
        numeric, codes, y = batch
        return F.binary_cross_entropy_with_logits(model(numeric, codes), y)

    best: dict[str, Any] = {"loss": np.inf, "epoch": 0, "state": None}
    if linear is not None:  # the logistic regression alone is a candidate too: "epoch 0"
        best.update(loss=evaluate_state(net, linear, val), state=linear)

    def evaluate() -> dict[str, float]:
        if rank > 0:
            return {}
        m = classification_metrics(val.label, predict(net, val))
        return {"val_loss": m.pop("log_loss"), **m}

    def stop(history: list[dict[str, float]]) -> bool:
        """Early stopping: the best epoch's weights kept; stop after PATIENCE epochs without a lower
        held-out log loss (the first process decides, every process stops with it)."""
        row = history[-1]
        if rank == 0 and row["val_loss"] < best["loss"]:
            best.update(loss=row["val_loss"], epoch=row["epoch"], state=copy.deepcopy(net.state_dict()))
        done = torch.tensor(int(rank == 0 and row["epoch"] - best["epoch"] >= PATIENCE))
        if world > 1:
            dist.broadcast(done, src=0)
        return bool(done)

    started = time.perf_counter()
    history = fit(model, batches, loss_fn, opt, cfg.epochs, evaluate, cfg.name or "click model", sched,
                  quiet=rank > 0, stop=stop)  # fmt: skip
    seconds = time.perf_counter() - started
    if rank == 0 and best["state"] is not None and best["epoch"] != len(history):
        net.load_state_dict(best["state"])
        log.info("kept epoch %s of %s (lowest held-out log loss %.4f)", best["epoch"], len(history), best["loss"])
    return history, seconds, best["epoch"]


def evaluate_state(net: ClickNet, state: dict[str, torch.Tensor], val: ClickLog) -> float:
    """The held-out log loss of the network with `state` (the logistic regression); the network's own
    weights are put back."""
    own = copy.deepcopy(net.state_dict())
    net.load_state_dict(state)
    loss = classification_metrics(val.label, predict(net, val))["log_loss"]
    net.load_state_dict(own)
    log.info("held-out log loss of the logistic regression alone (epoch 0): %.4f", loss)
    return loss


def predict(net: ClickNet, data: ClickLog) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(data), EVAL_CHUNK):
            numeric = torch.from_numpy(data.numeric[i : i + EVAL_CHUNK])
            codes = torch.from_numpy(data.codes[i : i + EVAL_CHUNK].astype(np.int64))
            out.append(net(numeric, codes).numpy().ravel())
    return np.concatenate(out)


def bar_checks(label: np.ndarray, model: np.ndarray, baseline: np.ndarray) -> dict[str, bool]:
    """The click model's two bars, each within the statistical error of the held-out rows' number
    (training/intervals.py): its AUC not below the logistic regression's by more than Z_ONE_SIDED
    standard errors of the difference, and its calibration error within CALIBRATION_BAR or what a
    calibrated model shows on as many rows, whichever is larger."""
    auc, base_auc, se = auc_difference(label, model, baseline)
    ece, noise = calibration_error(label, model), calibration_noise(model)
    limit = max(CALIBRATION_BAR, noise)
    return {
        f"auc {auc:.4f} >= tuned logistic regression {base_auc:.4f} - {Z_ONE_SIDED} x {se:.4f} (the difference's "
        f"standard error on {len(label):,} held-out rows)": auc >= base_auc - Z_ONE_SIDED * se,
        f"calibration error {ece:.4f} <= {limit:.4f} ({CALIBRATION_BAR}, or {noise:.4f}: the 95th percentile of a "
        f"calibrated model's on {len(label):,} rows)": ece <= limit,
    }


@dataclass
class Baseline:
    """A fitted logistic regression: its held-out metrics and probabilities, its L2 strength, and its
    weights: per code column the codes of the fit rows and theirs, per scaled number (with the
    scaling), and the intercept."""

    metrics: dict[str, float]
    c: float
    clicks: np.ndarray
    rows: int  # the fit rows'
    codes: list[tuple[np.ndarray, np.ndarray]]
    numbers: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    intercept: float


def logistic_baseline(schema: Schema, fit_rows: ClickLog, val: ClickLog) -> Baseline:
    """A logistic regression on the same hashed codes, one-hot (plus the scaled numbers), its L2
    strength chosen on the held-out rows: the strongest linear model the split allows."""
    sizes = [c.buckets if c.role == "id" else len(c.values) for c in code_columns(schema)]
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    log_mask = np.array([c.log for c in schema.role("numeric")], dtype=bool)
    k, m = fit_rows.codes.shape[1], fit_rows.numeric.shape[1]

    def numbers(d: ClickLog) -> np.ndarray:
        x = d.numeric.astype(np.float64)
        return np.where(log_mask, np.log1p(np.clip(x, 0, None)), x)

    fit_numbers = numbers(fit_rows)
    mean, std = fit_numbers.mean(0), fit_numbers.std(0) + 1e-6
    # Only the one-hot columns the fit rows hold get a weight: under L2 from a zero start a column no
    # fit row holds keeps weight 0, so leaving it out changes no answer, and the solver's vectors
    # (lbfgs keeps twenty of them) shrink from every bucket of every column to the buckets in use.
    used = np.concatenate([np.flatnonzero(np.bincount(fit_rows.codes[:, j], minlength=size)) + offsets[j]
                           for j, size in enumerate(sizes)])  # fmt: skip
    column = np.full(int(sum(sizes)), -1, np.int64)
    column[used] = np.arange(len(used))
    width = len(used)

    def design(d: ClickLog) -> sp.csr_matrix:
        """Row by row: a 1 at each code's column (a 0 at column 0 for a code no fit row holds), then the
        scaled numbers. Built as CSR arrays at once, indices and row pointers int32 (float64 values:
        what sklearn's lbfgs fits on without a copy), no COO or hstack."""
        n = len(d)
        index = np.int32 if n * (k + m) < 2**31 else np.int64
        indices = np.empty((n, k + m), index)
        values = np.ones((n, k + m), np.float64)
        for j in range(k):  # column by column: no int64 copy of all the codes at once
            where = column[d.codes[:, j] + offsets[j]]
            values[:, j] = where >= 0
            indices[:, j] = np.maximum(where, 0)
        indices[:, k:] = width + np.arange(m, dtype=index)
        values[:, k:] = (numbers(d) - mean) / std
        indptr = np.arange(0, n * (k + m) + 1, k + m, dtype=index)
        return sp.csr_matrix((values.ravel(), indices.ravel(), indptr), shape=(n, width + m))

    x_fit = design(fit_rows)
    best: tuple[float, dict[str, float], float, np.ndarray, LogisticRegression] | None = None
    for c in (0.01, 0.03, 0.1, 0.3, 1.0):  # each from scratch: a warm start stopped at once, C after C
        model = LogisticRegression(C=c, max_iter=300).fit(x_fit, fit_rows.label)
        # scored in chunks: the one-hot matrix of a 4-million-row holdout would cost gigabytes at once
        scores = [model.predict_proba(design(val.take(slice(i, i + EVAL_CHUNK))))[:, 1]
                  for i in range(0, len(val), EVAL_CHUNK)]  # fmt: skip
        clicks = np.concatenate(scores)
        metrics = classification_metrics(val.label, clicks)
        log.info("logistic regression C=%g: held-out AUC %.4f", c, metrics["auc"])
        if best is None or metrics["auc"] > best[0]:
            best = (metrics["auc"], metrics, c, clicks, model)
    assert best is not None
    weights = best[4].coef_[0]
    codes = []
    for j, size in enumerate(sizes):  # the codes of column j the fit rows hold, and their weights
        held = used[(used >= offsets[j]) & (used < offsets[j] + size)]
        codes.append((held - offsets[j], weights[column[held]]))
    return Baseline(best[1], best[2], best[3], len(fit_rows), codes, weights[width:], mean, std,
                    float(best[4].intercept_[0]))  # fmt: skip


def warm_start(net: ClickNet, baseline: Baseline) -> dict[str, torch.Tensor]:
    """The wide part set to the logistic regression's weights (its numbers rescaled from the
    regression's scaling to the network's), the intercept in the head's bias. Returns the network's
    state with the deep part's head at zero: exactly the logistic regression, the candidate every
    epoch must beat. Training itself starts with the head as initialised: started at zero, the MLP
    stayed near the logistic regression (2 M simulated rows: 0.748 after 3 epochs, against 0.77)."""
    with torch.no_grad():
        for lookup, wide, (held, weights) in zip(net.lookups, net.wide_codes, baseline.codes, strict=True):
            rows = lookup.table[torch.from_numpy(held)]
            wide.weight[rows, 0] = torch.from_numpy(weights).float() * (rows > 0)
        shift = 0.0
        if len(baseline.numbers):
            std_net, mean_net = net.num_std.double().numpy(), net.num_mean.double().numpy()
            net.wide_numbers.weight[0] = torch.from_numpy(baseline.numbers * std_net / baseline.std).float()
            shift = float(np.sum(baseline.numbers * (mean_net - baseline.mean) / baseline.std))
        net.head.bias.fill_(baseline.intercept + shift)
        state = copy.deepcopy(net.state_dict())
        state["head.weight"].zero_()
    return state


def _numeric_cards(schema: Schema, train: ClickLog) -> list[NumericCard]:
    cards = []
    for j, c in enumerate(schema.role("numeric")):
        lo, hi = float(train.numeric[:, j].min()), float(train.numeric[:, j].max())
        cards.append(NumericCard(
            name=c.name, description=c.description or f"Column {c.name} of the log.", unit="as in the log",
            allowed=(-NUMERIC_BOUND, NUMERIC_BOUND), observed=(lo, hi), default=c.missing, integer=False,
            boolean=False, example=float(train.numeric[0, j]),
        ))  # fmt: skip
    return cards


def _code_cards(schema: Schema, seen: list[np.ndarray], data: ClickLog) -> list[CategoricalCard]:
    cards = []
    examples = data.facts.get("examples", {})
    for c, frequent in zip(code_columns(schema), seen, strict=True):
        description = c.description or f"Column {c.name} of the log."
        if c.role == "categorical":
            cards.append(CategoricalCard(
                name=c.name, description=description, values=list(c.values), allowed=(0, len(c.values) - 1),
                vocabulary=[int(i) for i in np.flatnonzero(frequent)], default=c.default,
                example=examples.get(c.name, c.values[0]),
            ))  # fmt: skip
            continue
        bits = base64.b64encode(np.packbits(frequent).tobytes()).decode()
        cards.append(CategoricalCard(
            name=c.name, description=description, values=None, allowed=(0, c.buckets - 1), vocabulary=[],
            default="" if c.optional else None, example=examples.get(c.name, ""),
            hashing=HashingCard(function=hashing.FUNCTION, salt=salt_of(c), buckets=c.buckets,
                                max_bytes=hashing.MAX_ID_BYTES, seen=bits),
        ))  # fmt: skip
    return cards


def _declared(column) -> dict:
    """A column as the card records it: its role and the options that differ from the defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(column)}
    return {k: v for k, v in dataclasses.asdict(column).items() if k in ("name", "role") or v != defaults[k]}
