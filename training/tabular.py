"""What the tabular trainers share: building the net from training data, its minibatches, and
`train_tabular`, which trains and exports a model of any declared schema (a TabularSpec and rows):
the service then serves it from its folder, typed endpoints and all, with no code."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from service.cards import DataCard, ModelCard
from training.contract import CATEGORICAL_INPUT, NUMERIC_INPUT, TabularSpec
from training.data_tabular import TabularData, build_lookups, feature_cards
from training.models import TabularNet

FORCE_UNKNOWN = -1  # a code no lookup table holds: the net sees the unknown bucket


def build_net(
    spec: TabularSpec,
    train: TabularData,
    hidden: tuple[int, ...],
    embedding_dim: int,
    output: str,
    min_count: int = 1,
    log_features: tuple[str, ...] = (),
    trend_features: tuple[str, ...] = (),
    bucketed: tuple[str, ...] = (),
    buckets: int = 20,
    **head: float,
) -> tuple[TabularNet, list[list[int]]]:
    """The net with its scaling statistics and lookup tables taken from the training rows only."""
    lookups, vocabularies = build_lookups(spec, train.categorical, min_count)
    log_mask = torch.tensor([f.name in log_features for f in spec.numeric])
    x = torch.from_numpy(train.numeric)
    x = torch.where(log_mask, torch.log1p(x.clamp_min(0)), x)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    dims = [min(embedding_dim, len(v) + 1) for v in vocabularies]
    edges = {}
    for j, f in enumerate(spec.numeric):
        if f.name in bucketed:  # quantile bins of the (log-transformed where asked) training values
            column = x[:, j].double()
            edges[j] = torch.unique(torch.quantile(column, torch.linspace(0, 1, buckets + 1, dtype=torch.double)[1:-1]))
    trend_mask = torch.tensor([f.name in trend_features for f in spec.numeric])
    net = TabularNet(
        mean, std, lookups, dims, hidden, output, log_mask=log_mask, bucket_edges=edges, trend_mask=trend_mask, **head
    )
    return net, vocabularies


def batches(
    data: TabularData, target: np.ndarray, batch_size: int, gen: torch.Generator, unknown_rate: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled minibatches. A fraction `unknown_rate` of categorical codes is replaced by an unknown
    code, so the unknown bucket learns an average row instead of staying at its random start."""
    numeric = torch.from_numpy(data.numeric)
    categorical = torch.from_numpy(data.categorical)
    y = torch.from_numpy(target.astype(np.float32)).view(-1, 1)
    order = torch.randperm(len(numeric), generator=gen)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        codes = categorical[idx].clone()
        if unknown_rate:
            codes[torch.rand(codes.shape, generator=gen) < unknown_rate] = FORCE_UNKNOWN
        yield numeric[idx], codes, y[idx]


def train_tabular(
    spec: TabularSpec,
    train: TabularData,
    val: TabularData,
    target: str,
    out: Path | None = None,
    epochs: int = 20,
    hidden: tuple[int, ...] = (64, 32),
    embedding_dim: int = 8,
    lr: float = 3e-3,
    batch_size: int = 256,
    seed: int = 0,
    publish: bool = False,
    models_dir: Path = Path("models"),
    data_files: tuple[Path, ...] = (),
) -> ModelCard:
    """Trains a ReLU network on `train` (its `target` column: a number for regression, 0/1 for binary
    classification), evaluates it on `val` against a constant baseline (the training mean, or its click
    rate), and exports model.onnx, card.json (with its drift reference, data and bar) and the curves to
    `out`: by default build/models/<name>/<UTC time>, as every trainer; never inside `models_dir`.
    `publish` installs it there when the bar held. `data_files`: the files the rows came from, recorded
    by name and sha256. The card records the CSV layout read_tabular_csv reads (the features' columns,
    then `target`), in which training.payload_data writes the payload log back."""
    from types import SimpleNamespace

    from service.measures import classification_metrics, regression_metrics
    from training import distributions
    from training.data_tabular import layout
    from training.export import publish as install  # here: export imports this module's neighbours
    from training.export import run_dir, save_model
    from training.loop import fit
    from training.runinfo import library_versions, sha256_file

    out = run_dir(SimpleNamespace(out=out, models_dir=models_dir, dry_run=False, publish=publish), spec.name)

    started = time.time()
    torch.manual_seed(seed)
    y = train.extra[target].astype(np.float64)
    regression = spec.task == "regression"
    shift, scale = (float(y.mean()), float(y.std() or 1.0)) if regression else (0.0, 1.0)
    net, vocabularies = build_net(
        spec, train, hidden, embedding_dim, "linear" if regression else "probability", target_shift=shift,
        target_scale=scale,
    )  # fmt: skip
    fitted = (y - shift) / scale
    val_inputs = {NUMERIC_INPUT: torch.from_numpy(val.numeric), CATEGORICAL_INPUT: torch.from_numpy(val.categorical)}
    score = regression_metrics if regression else classification_metrics

    def loss_fn(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        numeric, codes, y_batch = batch
        raw = net.raw(numeric, codes)
        return F.mse_loss(raw, y_batch) if regression else F.binary_cross_entropy_with_logits(raw, y_batch)

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history = fit(
        net, lambda _: batches(train, fitted, batch_size, gen, 0.01), loss_fn, opt, epochs,
        lambda: score(val.extra[target], net(*val_inputs.values()).numpy().ravel()), spec.name,
    )  # fmt: skip
    with torch.no_grad():
        predicted = net(*val_inputs.values()).numpy().ravel()
    final = score(val.extra[target], predicted)
    constant = np.full(len(val), y.mean())  # the training mean, or its click rate
    baseline = score(val.extra[target], constant)
    headline = "r2" if regression else "log_loss"
    better = final[headline] > baseline[headline] if regression else final[headline] < baseline[headline]
    numeric_cards, categorical_cards = feature_cards(spec, train.numeric, vocabularies)
    reference = distributions.tabular(numeric_cards, train.numeric, categorical_cards, train.categorical, predicted,
                                      f"training rows, {len(train):,}", f"validation rows, {len(val):,}")  # fmt: skip
    files = [{"path": p.name, "sha256": sha256_file(p), "rows": None} for p in data_files]
    fields = {
        "name": spec.name, "version": "1", "task": spec.task, "description": spec.description,
        "output_unit": spec.output_unit, "api": spec.api, "numeric": numeric_cards, "categorical": categorical_cards,
        "metrics": {"model": final, "baseline": baseline}, "reference": reference,
        "bar": {"description": f"{headline} better than the constant baseline's on the validation rows",
                "checks": {f"{headline} better than the baseline's": bool(better)}},
        "data": DataCard(files=files, split="train and validation rows as given to train_tabular",
                         rows={"train": len(train), "validation": len(val)}),
        "training": {"versions": library_versions(), "history": history, "duration_s": round(time.time() - started, 1),
                     "layout": layout(spec, target)},
    }  # fmt: skip
    tolerance = 1e-4 * max(1.0, float(np.abs(y).max()))  # float32 rounding of the output's magnitude
    card = save_model(net, val_inputs, spec.output, out, tolerance, fields, history, next(iter(final)))
    if publish and not card.bar_failed():
        install(out, models_dir, card.name, card.version)
    return card
