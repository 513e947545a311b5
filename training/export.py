"""ONNX export with a dynamic batch dimension, the torch-vs-onnxruntime parity check, the model
directory (model.onnx, card.json, training curves), and how it reaches the served models directory.

A run never writes into the served models directory: it writes to --out (by default a new folder
under build/models/), and only `--publish`, after the card passed its bar, installs the result there.
A dry run, or a run whose bar fails, leaves what is served untouched."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from service.cards import ONNX_FILE, ModelCard, ParityCard, TensorSpec, session_signature, write_card
from training.runinfo import TrainingDataError, sha256_file

log = logging.getLogger(__name__)
OPSET = 17
CURVES_FILE = "training_curves.png"


class ExportParityError(RuntimeError):
    """onnxruntime's answers differ from torch's by more than the model's tolerance."""


def export_onnx(module: nn.Module, inputs: dict[str, torch.Tensor], output: str, model_dir: Path) -> Path:
    """Writes model_dir/model.onnx; every input and the output get a dynamic batch dimension "N"."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / ONNX_FILE
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes={name: {0: "N"} for name in [*inputs, output]},
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


def check_parity(module: nn.Module, onnx_path: Path, inputs: dict[str, torch.Tensor], tolerance: float) -> float:
    """Max absolute difference between torch and onnxruntime on `inputs`; raises above `tolerance`."""
    module.eval()
    with torch.no_grad():
        expected = module(*inputs.values()).float().numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    if not np.isfinite(diff) or diff > tolerance:
        raise ExportParityError(
            f"{onnx_path}: onnxruntime differs from torch by {diff:.3g} (tolerance {tolerance:g}) "
            f"on {len(expected)} held-out rows"
        )
    log.info("parity: max abs diff %.3g <= %g", diff, tolerance)
    return diff


def graph_signature(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs as the card records them."""
    return session_signature(ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]))


def onnx_facts(onnx_path: Path) -> dict:
    model = onnx.load(str(onnx_path), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return {"onnx_sha256": sha256_file(onnx_path), "opset": int(opset)}


def plot_curves(history: list[dict[str, float]], metric: str, path: Path, title: str) -> Path:
    """Loss (train, validation when recorded) and the main metric per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train", marker=".")
    if "val_loss" in history[0]:
        ax1.plot(epochs, [h["val_loss"] for h in history], label="validation", marker=".")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [h[metric] for h in history], marker=".", color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"validation {metric}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_model(
    module: nn.Module,
    inputs: dict[str, torch.Tensor],
    output: str,
    model_dir: Path,
    tolerance: float,
    card_fields: dict,
    history: list[dict[str, float]],
    metric: str,
) -> ModelCard:
    """Export, check parity on `inputs` (held-out rows), write the card and the curves PNG.

    A module with an `exported()` form (the tabular nets' stacked lookups) exports that, and parity
    is checked against the module as trained: the check covers the rewrite too."""
    exported = module.exported() if hasattr(module, "exported") else module
    onnx_path = export_onnx(exported, inputs, output, model_dir)
    diff = check_parity(module, onnx_path, inputs, tolerance)
    graph_inputs, graph_outputs = graph_signature(onnx_path)
    card = ModelCard(
        **card_fields,
        **onnx_facts(onnx_path),
        inputs=graph_inputs,
        outputs=graph_outputs,
        parity=ParityCard(max_abs_diff=diff, tolerance=tolerance, rows=len(next(iter(inputs.values())))),
    )
    write_card(model_dir, card)
    plot_curves(history, metric, model_dir / CURVES_FILE, f"{card.name}: training")
    return card


def report_bar(card: ModelCard) -> bool:
    """Prints the card's bar; True when every check held."""
    print(f"\n{card.name} v{card.version}: {card.bar.get('description', '')}")
    for name, values in card.metrics.items():
        print(f"  {name:9s} " + "  ".join(f"{k}={v:.4f}" for k, v in values.items()))
    checks = card.bar.get("checks", {})
    for check, held in checks.items():
        print(f"  [{'PASS' if held else 'FAIL'}] {check}")
    return all(checks.values())


def run_dir(cfg: Any, name: str) -> Path:
    """Where this run writes its model: --out, or build/models/<name>/<UTC time>. Checked before
    training starts: never inside the served models directory, and no publishing from a dry run."""
    out = cfg.out or Path("build/models") / name / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    models = cfg.models_dir.resolve()
    if out.resolve() == models or models in out.resolve().parents:
        raise TrainingDataError(
            f"--out {out} is inside the served models directory {cfg.models_dir}: write the run elsewhere "
            "(by default it goes under build/models/) and add --publish to install it once its card passes its bar"
        )
    if cfg.dry_run and cfg.publish:
        raise TrainingDataError("--dry-run and --publish: a dry run's model is never served; drop one of them")
    return out


def publish(staged: Path, models_dir: Path, name: str, version: str) -> Path:
    """Installs a staged model folder as models_dir/name, replacing the one there by renames, so the
    models directory never holds a half-copied model (the service skips folders starting with '.').
    When models_dir/name holds versions (docs/versions.md), the model goes in beside them as
    models_dir/name/version instead, and the service swaps it in under its version policy."""
    folder = models_dir / name
    if (
        folder.is_dir()
        and not (folder / "card.json").exists()
        and any((p / "card.json").exists() for p in folder.iterdir())
    ):
        models_dir, name = folder, version
    target = models_dir / name
    incoming, previous = models_dir / f".{name}.incoming", models_dir / f".{name}.previous"
    for leftover in (incoming, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(staged, incoming)
    if target.exists():
        target.rename(previous)
    incoming.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    return target


def finish(card: ModelCard, out: Path, cfg: Any) -> int:
    """Prints the bar; publishes when asked and the bar held. 0, or 1 when the bar failed."""
    held = report_bar(card)
    served = cfg.models_dir / card.name
    if cfg.dry_run:
        print(f"dry run: model written to {out} (a dry run is never published)")
        return 0
    if not held:
        print(f"bar FAILED: the rejected model is in {out}; {served} is untouched", file=sys.stderr)
        return 1
    if cfg.publish:
        print(f"bar held: published {out} to {publish(out, cfg.models_dir, card.name, card.version)}")
    else:
        print(f"bar held: model written to {out}; --publish installs it as {served}")
    return 0
