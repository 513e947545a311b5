"""Train the ad-click model (ID embeddings + ReLU MLP); export it with its card.

    python -m training.train_adclick [--impressions N] [--data real_log.csv] [--dry-run] [--publish]

--help lists every flag with its default. Without --data it trains on impressions from
training/data_adclick.py, written to --generated-csv first so the card can record the file's digest.
A real log needs the contract's columns plus `timestamp` (sortable number) and `clicked` (0/1);
`p_true` is optional (enables the oracle AUC). The model goes to build/models/ad-click/<time>/ (or
--out); --publish installs it as models/ad-click once its card passes the bar.

    python -m training.train_adclick --schema avazu|criteo|simulated|my_log.toml --data log.csv.gz [...]

trains on a log as it comes, declared by a schema (training/train_clicklog.py; `--schema avazu --help`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

from service.cards import DataCard
from service.measures import classification_metrics
from training import distributions
from training.contract import AD_CLICK, CATEGORICAL_INPUT, NUMERIC_INPUT
from training.data_adclick import generate, write_csv
from training.data_tabular import TabularData, feature_cards, read_tabular_csv
from training.export import finish, run_dir, save_model
from training.loop import fit
from training.models import TabularNet
from training.runinfo import config_dict, library_versions, run_trainer, sha256_file
from training.tabular import batches, build_net

AUC_GAP_BAR = 0.01
CALIBRATION_BAR = 0.01


@dataclass
class Config:
    data: Path | None = None  # a real log (CSV); default: generate impressions
    generated_csv: Path = Path("build/adclick/impressions.csv")  # where generated impressions are written
    impressions: int = 2_000_000  # generated impressions: ~80k clicks at the 4% base rate
    holdout: float = 0.2  # the latest 20% of impressions, by timestamp, are held out
    out: Path | None = None  # where the model is written; default build/models/ad-click/<UTC time>
    publish: bool = False  # once the card passes its bar, install it as <models-dir>/ad-click[/<version>]
    models_dir: Path = Path("models")  # the served models directory (never written without --publish)
    epochs: int = 5  # validation loss is flat after 4-5 epochs
    batch_size: int = 2048  # impressions per Adam step
    lr: float = 3e-3  # Adam; cosine-decayed over the run
    weight_decay: float = 1e-6  # Adam's L2 penalty
    hidden: str = "128,64"  # ReLU layers after the embeddings
    embedding_dim: int = 16  # capped at vocabulary size + 1 per feature
    bucketed: str = "age"  # numeric features that also enter as embedded quantile bins (20)
    min_count: int = 5  # IDs seen fewer times share the unknown bucket, as unseen ones do at serving time
    unknown_rate: float = 0.01  # share of codes hidden in training so the unknown bucket learns
    threads: int = 0  # 0: torch's default (all cores)
    seed: int = 0  # the generator's and torch's seed
    version: str = "1"  # written into the card
    dry_run: bool = False  # 20k impressions, one epoch: seconds, for tests; never published


def load(cfg: Config) -> tuple[TabularData, dict]:
    if cfg.data is not None:
        data = read_tabular_csv(cfg.data, AD_CLICK, {"timestamp": float, "clicked": int})
        source = {"path": cfg.data.name, "sha256": sha256_file(cfg.data), "rows": len(data)}
        return data, source
    imp = generate(cfg.impressions, cfg.seed)
    write_csv(imp, cfg.generated_csv)
    source = {
        "path": cfg.generated_csv.name,
        "sha256": sha256_file(cfg.generated_csv),
        "rows": len(imp),
        "generator": "training/data_adclick.py",
        "seed": cfg.seed,
    }
    extra = {"timestamp": imp.timestamp, "clicked": imp.clicked, "p_true": imp.p_true}
    return TabularData(imp.numeric, imp.categorical, extra), source


def logistic_baseline(train: TabularData, val: TabularData) -> np.ndarray:
    """Logistic regression on main effects: one-hot of every categorical plus standardised age."""
    onehot = OneHotEncoder(handle_unknown="ignore", min_frequency=5).fit(train.categorical)
    mean, std = train.numeric.mean(0), train.numeric.std(0)

    def design(d: TabularData):
        return sp.hstack([onehot.transform(d.categorical), sp.csr_matrix((d.numeric - mean) / std)]).tocsr()

    model = LogisticRegression(C=1.0, max_iter=300).fit(design(train), train.extra["clicked"])
    return model.predict_proba(design(val))[:, 1]


def split(cfg: Config, data: TabularData) -> tuple[TabularData, TabularData]:
    """The latest `holdout` share of impressions, by timestamp, is the validation slice."""
    order = np.argsort(data.extra["timestamp"], kind="stable")
    cut = int(len(order) * (1 - cfg.holdout))
    return data.take(order[:cut]), data.take(order[cut:])


def train_net(cfg: Config, train: TabularData, val: TabularData) -> tuple[TabularNet, list[list[int]], list[dict]]:
    """Builds and trains the network on `train`, evaluating on `val` each epoch."""
    net, vocabularies = build_net(
        AD_CLICK,
        train,
        tuple(int(h) for h in cfg.hidden.split(",")),
        cfg.embedding_dim,
        "probability",
        min_count=cfg.min_count,
        bucketed=tuple(x for x in cfg.bucketed.split(",") if x),
    )
    y_val = val.extra["clicked"]
    gen = torch.Generator().manual_seed(cfg.seed)
    val_inputs = (torch.from_numpy(val.numeric), torch.from_numpy(val.categorical))

    def loss_fn(batch):
        numeric, codes, y = batch
        return F.binary_cross_entropy_with_logits(net.raw(numeric, codes), y)

    def evaluate() -> dict[str, float]:
        p = net(*val_inputs).numpy().ravel()
        m = classification_metrics(y_val, p)
        return {"val_loss": m.pop("log_loss"), **m}

    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(train) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    history = fit(
        net,
        lambda _: batches(train, train.extra["clicked"], cfg.batch_size, gen, cfg.unknown_rate),
        loss_fn,
        opt,
        cfg.epochs,
        evaluate,
        "ad-click",
        sched,
    )
    return net, vocabularies, history


def train(cfg: Config) -> int:
    out = run_dir(cfg, AD_CLICK.name)
    if cfg.dry_run:
        cfg.impressions, cfg.epochs = 20_000, 1
    started = time.time()
    data, source = load(cfg)
    train, val = split(cfg, data)
    net, vocabularies, history = train_net(cfg, train, val)
    y_val = val.extra["clicked"]
    val_inputs = {
        NUMERIC_INPUT: torch.from_numpy(val.numeric),
        CATEGORICAL_INPUT: torch.from_numpy(val.categorical),
    }
    with torch.no_grad():
        val_clicks = net(*val_inputs.values()).numpy().ravel()
    final = classification_metrics(y_val, val_clicks)
    baseline = classification_metrics(y_val, logistic_baseline(train, val))
    metrics = {"model": final, "baseline": baseline}
    checks = {
        f"auc {final['auc']:.4f} > baseline {baseline['auc']:.4f}": final["auc"] > baseline["auc"],
        f"calibration error {final['calibration_error']:.4f} <= {CALIBRATION_BAR}": final["calibration_error"]
        <= CALIBRATION_BAR,
    }
    if "p_true" in val.extra:
        oracle = classification_metrics(y_val, val.extra["p_true"])
        metrics["oracle"] = oracle
        checks[f"auc {final['auc']:.4f} within {AUC_GAP_BAR} of oracle {oracle['auc']:.4f}"] = (
            oracle["auc"] - final["auc"] <= AUC_GAP_BAR
        )
    unseen_ads = float(np.mean(~np.isin(val.categorical[:, 3], vocabularies[3])))
    numeric_cards, categorical_cards = feature_cards(AD_CLICK, train.numeric, vocabularies)
    card_fields = {
        "name": AD_CLICK.name,
        "version": cfg.version,
        "task": AD_CLICK.task,
        "description": AD_CLICK.description,
        "output_unit": AD_CLICK.output_unit,
        "api": AD_CLICK.api,
        "numeric": numeric_cards,
        "categorical": categorical_cards,
        "reference": distributions.tabular(
            numeric_cards,
            train.numeric,
            categorical_cards,
            train.categorical,
            val_clicks,
            f"training split, {len(train):,} impressions",
            f"held-out split, {len(val):,} impressions",
        ),
        "data": DataCard(
            files=[source],
            split=f"by time: the latest {cfg.holdout:.0%} of impressions held out "
            f"({unseen_ads:.1%} of them show an ad id outside the training vocabulary)",
            rows={"train": len(train), "validation": len(val), "validation_clicks": int(y_val.sum())},
        ),
        "metrics": metrics,
        "bar": {
            "description": f"AUC within {AUC_GAP_BAR} of the oracle and above the logistic baseline, "
            f"calibration error <= {CALIBRATION_BAR} (20 equal-count bins)",
            "checks": checks,
        },
        "training": {
            "config": config_dict(cfg),
            "versions": library_versions(),
            "history": history,
            "duration_s": round(time.time() - started, 1),
            "parameters": sum(p.numel() for p in net.parameters()),
        },
    }
    parity_rows = {k: v[:20_000] for k, v in val_inputs.items()}
    card = save_model(net, parity_rows, AD_CLICK.output, out, 1e-5, card_fields, history, "auc")
    return finish(card, out, cfg)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a == "--schema" or a.startswith("--schema=") for a in args):  # a log declared by its schema
        from training import train_clicklog

        return run_trainer(train_clicklog.Config, args, train_clicklog.__doc__ or "", train_clicklog.train)
    return run_trainer(Config, argv, __doc__ or "", train)


if __name__ == "__main__":
    sys.exit(main())
