"""The lecture's two claims, measured on our data: (1) scale, (2) ReLU over sigmoid.

    python -m training.lecture scale [--quick] [--out training/docs]          (make scale-curve)
    python -m training.lecture activation [--quick] [--out training/docs]     (make activation-curve)

scale: a linear/logistic baseline and small, medium and large networks trained on growing random
fractions of the training split, each scored on the whole validation split (several seeds for the
small fractions), for housing-price (R²) and ad-click (AUC). activation: the housing network with
ReLU and with sigmoid hidden units, same optimiser (SGD with momentum), training loss and validation
R² against steps and against training seconds. Each writes a PNG and a CSV; --quick is a small,
fast version for the tests.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from service.measures import classification_metrics, regression_metrics
from training import train_adclick, train_housing
from training.data_adclick import generate
from training.data_housing import housing_spec, load_housing, split_by_date
from training.data_tabular import TabularData
from training.runinfo import seed_everything

DOCS = Path(__file__).with_name("docs")
SIZES = {"small": "32", "medium": "128,64", "large": "256,128,64"}
# The curves in training/docs were measured on the house features alone, before the served model took
# the sale date: the lecture's comparisons stay on those features.
LECTURE_HOUSING = housing_spec(drop="sale_date")


def _subset(data: TabularData, fraction: float, seed: int) -> TabularData:
    if fraction >= 1.0:
        return data
    rng = np.random.default_rng(seed)
    return data.take(np.sort(rng.choice(len(data), size=max(int(len(data) * fraction), 32), replace=False)))


def _epochs(full: int, fraction: float, cap: int) -> int:
    """More passes over smaller subsets, so every run takes enough optimiser steps to converge."""
    return min(cap, max(full, round(full / fraction**0.5)))


def scale_rows(quick: bool) -> list[dict]:
    fractions = [0.03, 0.3] if quick else [0.01, 0.03, 0.1, 0.3, 1.0]
    rows: list[dict] = []

    # housing-price: R² in dollars on Feb-Mar 2015
    h_train, h_val = split_by_date(load_housing(train_housing.Config.data, LECTURE_HOUSING))
    h_base = train_housing.Config(epochs=5 if quick else 30)
    log_features = tuple(h_base.log_features.split(","))
    # ad-click: AUC on the latest 20% of a generated log
    a_base = train_adclick.Config(impressions=100_000 if quick else 2_000_000, epochs=1 if quick else 5)
    imp = generate(a_base.impressions, a_base.seed)
    a_all = TabularData(imp.numeric, imp.categorical, {"timestamp": imp.timestamp, "clicked": imp.clicked})
    a_train, a_val = train_adclick.split(a_base, a_all)

    tasks: list[tuple[str, TabularData, TabularData, Callable, Callable, Callable]] = [
        ("housing-price", h_train, h_val,
         lambda tr, va: train_housing.linear_baseline(LECTURE_HOUSING, tr, va, log_features),
         lambda cfg, tr, va: train_housing.train_net(cfg, tr, va, LECTURE_HOUSING)[0],
         lambda va, pred: regression_metrics(va.extra["price"], pred)["r2"]),
        ("ad-click", a_train, a_val,
         train_adclick.logistic_baseline,
         lambda cfg, tr, va: train_adclick.train_net(cfg, tr, va)[0],
         lambda va, pred: classification_metrics(va.extra["clicked"], pred)["auc"]),
    ]  # fmt: skip
    for name, train, val, baseline, train_net, score in tasks:
        base = h_base if name == "housing-price" else a_base
        val_inputs = (torch.from_numpy(val.numeric), torch.from_numpy(val.categorical))
        for fraction in fractions:
            seeds = [0] if quick or fraction >= 0.3 else [0, 1, 2]
            for seed in seeds:
                part = _subset(train, fraction, seed)
                rows.append({"model_of": name, "model": "baseline", "fraction": fraction, "rows": len(part),
                             "seed": seed, "score": score(val, baseline(part, val))})  # fmt: skip
                for size, hidden in SIZES.items():
                    cap = 300 if name == "housing-price" else 40
                    cfg = dataclasses.replace(
                        base, hidden=hidden, seed=seed, epochs=_epochs(base.epochs, fraction, cap)
                    )
                    seed_everything(seed)
                    net = train_net(cfg, part, val)
                    with torch.no_grad():
                        pred = net(*val_inputs).numpy().ravel()
                    rows.append({"model_of": name, "model": size, "fraction": fraction, "rows": len(part),
                                 "seed": seed, "score": score(val, pred)})  # fmt: skip
                    logging.info("%s %s fraction %.2f seed %d: %.4f", name, size, fraction, seed, rows[-1]["score"])
    return rows


def plot_scale(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (name, metric) in zip(axes, [("housing-price", "validation R² (dollars)"), ("ad-click", "validation AUC")],
                                  strict=True):  # fmt: skip
        for model in ["baseline", *SIZES]:
            by_fraction: dict[float, list[dict]] = {}
            for r in rows:
                if r["model_of"] == name and r["model"] == model:
                    by_fraction.setdefault(r["fraction"], []).append(r)
            xs = [np.mean([r["rows"] for r in v]) for v in by_fraction.values()]
            ys = [np.mean([r["score"] for r in v]) for v in by_fraction.values()]
            err = [np.std([r["score"] for r in v]) for v in by_fraction.values()]
            label = (
                "linear baseline"
                if model == "baseline" and name == "housing-price"
                else ("logistic baseline" if model == "baseline" else f"{model} net ({SIZES[model]})")
            )
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("training rows (log scale)")
        ax.set_ylabel(metric)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Scale: validation performance against training-set size (mean ± sd over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def activation_rows(quick: bool) -> list[dict]:
    train, val = split_by_date(load_housing(train_housing.Config.data, LECTURE_HOUSING))
    rows = []
    for activation in ("relu", "sigmoid"):
        cfg = train_housing.Config(activation=activation, optimizer="sgd", lr=0.01, epochs=3 if quick else 30,
                                   dropout=0.0, seed=0)  # fmt: skip
        seed_everything(cfg.seed)
        _, _, history = train_housing.train_net(cfg, train, val, LECTURE_HOUSING)
        for h in history:
            rows.append({"activation": activation, "epoch": h["epoch"], "steps": h["steps"], "seconds": h["seconds"],
                         "train_loss": h["train_loss"], "val_loss": h["val_loss"], "val_r2": h["r2"]})  # fmt: skip
    return rows


def plot_activation(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for activation in ("relu", "sigmoid"):
        mine = [r for r in rows if r["activation"] == activation]
        axes[0].plot([r["steps"] for r in mine], [r["train_loss"] for r in mine], marker=".", label=activation)
        axes[1].plot([r["seconds"] for r in mine], [r["train_loss"] for r in mine], marker=".", label=activation)
        axes[2].plot([r["steps"] for r in mine], [r["val_r2"] for r in mine], marker=".", label=activation)
    for ax, (x, y) in zip(axes, [("optimiser steps", "training loss (standardised log price)"),
                                 ("training seconds", "training loss"), ("optimiser steps", "validation R²")],
                          strict=True):  # fmt: skip
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].set_ylim(bottom=max(-0.1, min(r["val_r2"] for r in rows)))
    fig.suptitle("housing-price MLP (256-128-64), SGD with momentum 0.9, lr 0.01: ReLU against sigmoid")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["scale", "activation"])
    parser.add_argument("--quick", action="store_true", help="a small, fast version (tests)")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "scale":
        rows = scale_rows(args.quick)
        write_csv(rows, args.out / "scale_curve.csv")
        plot_scale(rows, args.out / "scale_curve.png")
    else:
        rows = activation_rows(args.quick)
        write_csv(rows, args.out / "activation_curve.csv")
        plot_activation(rows, args.out / "activation_curve.png")
    print(f"wrote {args.out}/{args.what}_curve.png and .csv ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
