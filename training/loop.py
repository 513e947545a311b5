"""The training loop shared by all three models: epochs of minibatch steps, then a held-out evaluation."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from training.runinfo import bars


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    evaluate: Callable[[], dict[str, float]],
    desc: str,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    bf16: bool = False,
    quiet: bool = False,
    stop: Callable[[list[dict[str, float]]], bool] | None = None,
) -> list[dict[str, float]]:
    """Trains for `epochs`; `batches(epoch)` yields minibatches, `loss_fn(batch)` returns the loss.

    The scheduler (if any) steps once per batch. Returns one history row per epoch: epoch, steps and
    training seconds so far, train_loss, and whatever `evaluate()` returns (run in eval mode, no gradients).
    `quiet`: no progress output (the other processes of a torchrun). Progress is a bar on a terminal, a
    line per epoch on stdout otherwise (bars()). `stop(history)`, asked after each epoch, ends the run
    early (early stopping: the caller keeps what it needs of the best epoch)."""
    history: list[dict[str, float]] = []
    seconds = 0.0  # training time so far, evaluation excluded: the x axis of wall-clock comparisons
    bar = tqdm(range(epochs), desc=desc, unit="epoch", dynamic_ncols=True, disable=quiet or not bars())
    lines = not quiet and not (bars() and sys.stdout.isatty())  # the bar, or lines: never both on one terminal
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        epoch_start = time.perf_counter()
        for batch in batches(epoch):
            # bf16 autocast roughly halves CNN step time on CPUs with AVX512-BF16/AMX.
            cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with cast:
                loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach())
            count += 1
        seconds += time.perf_counter() - epoch_start
        model.eval()
        with torch.no_grad():
            row = {"epoch": epoch + 1, "steps": (epoch + 1) * count, "seconds": round(seconds, 3),
                   "train_loss": total / max(count, 1), **evaluate()}  # fmt: skip
        history.append(row)
        shown = {k: v for k, v in row.items() if k not in ("epoch", "steps", "seconds")}
        bar.set_postfix({k: round(v, 4) for k, v in shown.items()})
        if lines:
            tqdm.write(f"{desc} epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items()))
        if stop is not None and stop(history):
            break
    bar.close()
    return history
