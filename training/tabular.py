"""What the two tabular trainers share: building the net from training data, and its minibatches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from service.contract import TabularSpec
from training.data_tabular import TabularData, build_lookups
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
    net = TabularNet(mean, std, lookups, dims, hidden, output, log_mask=log_mask, bucket_edges=edges, **head)
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
