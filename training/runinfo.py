"""What a training run records about itself and how it starts and ends: its config from the command
line (help generated from the config's own comments), seeds, library versions, file digests, where
its model goes, and one clear line instead of a traceback when the data is wrong."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import logging
import platform
import random
import sys
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from service.runtime import sha256_file  # noqa: F401  (re-exported: training records the same digest the service checks)

C = TypeVar("C")
log = logging.getLogger(__name__)
DATA_ERROR_EXIT = 2  # argparse's code for a bad command line: the run never started


class TrainingDataError(ValueError):
    """Bad training input: the message names the file, the row or member, the problem and what to do."""


def bars() -> bool:
    """Progress bars only where a person watches (stderr is a terminal): piped into a log, their
    carriage-return updates would interleave with the per-epoch lines."""
    return sys.stderr.isatty()


def seed_everything(seed: int) -> None:
    """Same seed, same machine, same libraries: the same model, to the last bit (PyTorch's reproducibility
    notes: seeds, deterministic kernels; the trainers also fix their thread count, `threads`). Another
    CPU may sum floats in another order: its model differs in the last digits."""
    import torch  # here, not at the top: data loading (and the load tests using it) need no torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)  # a kernel with no deterministic form warns


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def field_comments(cls: type) -> dict[str, str]:
    """The comment at the end of each field's line in a dataclass's source: `epochs: int = 30  # why`.
    --help is built from these, so the help and the code cannot drift apart."""
    comments: dict[str, str] = {}
    tokens = tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline)
    line_start: tokenize.TokenInfo | None = None
    for token in tokens:
        if token.type == tokenize.NAME and (line_start is None or line_start.start[0] != token.start[0]):
            line_start = token
        if token.type == tokenize.COMMENT and line_start is not None and line_start.start[0] == token.start[0]:
            comments[line_start.string] = token.string.lstrip("#").strip()
    return comments


def parse_config(cls: type[C], argv: list[str] | None = None, description: str = "") -> C:
    """Every dataclass field becomes a --flag with the dataclass default and its comment as help;
    bools become --flag/--no-flag."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = "none" if default is None else "empty" if default == "" else default
        text = f"{comments.get(f.name, '')} (default: {shown})".lstrip()
        text = text.replace("%", "%%")  # argparse formats help strings with %
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif f.type in ("Path | None", "str | None"):
            kind = Path if "Path" in str(f.type) else str
            parser.add_argument(flag, type=kind, default=default, help=text, metavar=f.name.upper())
        else:
            parser.add_argument(flag, type=type(default), default=default, help=text, metavar=f.name.upper())
    return cls(**vars(parser.parse_args(argv)))


def run_tool(cls: type[C], argv: list[str] | None, description: str, work: Callable[[C], int]) -> int:
    """A command without torch (make_card, payload_data): its config from the command line, then `work`;
    bad data ends it with one line and exit code 2, as a trainer's does."""
    cfg = parse_config(cls, argv, description)
    try:
        return work(cfg)
    except TrainingDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return DATA_ERROR_EXIT


def run_trainer(cls: type[C], argv: list[str] | None, description: str, train: Callable[[C], int]) -> int:
    """What every trainer does: its config from the command line, logging, seeds, torch threads, then
    `train`. Bad data or a bad combination of flags ends the run with one line and exit code 2, not a
    traceback: the user has something to fix, not a bug to report."""
    import torch

    cfg = parse_config(cls, argv, description)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seed_everything(cfg.seed)  # type: ignore[attr-defined]
    if getattr(cfg, "threads", 0):
        torch.set_num_threads(cfg.threads)  # type: ignore[attr-defined]
    try:
        return train(cfg)
    except TrainingDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return DATA_ERROR_EXIT


def config_dict(config: Any) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
