"""What a training run records about itself: seeds, library versions, file digests, its config."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import random
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from service.runtime import sha256_file  # noqa: F401  (re-exported: training records the same digest the service checks)

C = TypeVar("C")


class TrainingDataError(ValueError):
    """Bad training input: the message names the file, the row or member, and the problem."""


def seed_everything(seed: int) -> None:
    import torch  # here, not at the top: data loading (and the load tests using it) need no torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def parse_config(cls: type[C], argv: list[str] | None = None, description: str = "") -> C:
    """Every dataclass field becomes a --flag with the dataclass default; bools become --flag/--no-flag."""
    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif f.type in ("Path | None", "str | None"):
            parser.add_argument(flag, type=Path if "Path" in str(f.type) else str, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    return cls(**vars(parser.parse_args(argv)))


def start_run(cls: type[C], argv: list[str] | None, description: str) -> C:
    """What every trainer does first: its config from the command line, logging, seeds, torch threads."""
    import torch

    cfg = parse_config(cls, argv, description)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seed_everything(cfg.seed)  # type: ignore[attr-defined]
    if getattr(cfg, "threads", 0):
        torch.set_num_threads(cfg.threads)  # type: ignore[attr-defined]
    return cfg


def config_dict(config: Any) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
