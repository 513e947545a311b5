"""CIFAR-10 photos read straight from the `<class>/<name>.jpg` tar archives into uint8 arrays."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from training.contract import CIFAR10_LABELS
from training.runinfo import TrainingDataError


def load_cifar_tar(path: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 [N, 32, 32, 3] (RGB) and labels as int64 [N], label = index in CIFAR10_LABELS.

    `limit` keeps the first `limit` photos of each class (for dry runs)."""
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file: check --train-tar and --val-tar")
    index = {name: i for i, name in enumerate(CIFAR10_LABELS)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    per_class = dict.fromkeys(index, 0)
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 (the with below closes it)
    except (tarfile.TarError, OSError) as e:
        raise TrainingDataError(
            f"{path}: not a readable tar archive ({e}): give a CIFAR-10 .tar.gz of <class>/<photo> files"
        ) from e
    with tar:
        for member in tar:
            if not member.isfile():
                continue
            cls = member.name.split("/")[-2] if "/" in member.name else ""
            if cls not in index:
                raise TrainingDataError(
                    f"{path}: member {member.name}: not under a CIFAR-10 class folder: "
                    f"put each photo under one of {list(CIFAR10_LABELS)}"
                )
            if limit is not None and per_class[cls] >= limit:
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            try:
                with Image.open(io.BytesIO(data)) as im:
                    arr = np.asarray(im.convert("RGB"))
            except Exception as e:  # PIL raises many types for corrupt files
                raise TrainingDataError(
                    f"{path}: member {member.name}: not a decodable image ({e}): replace or remove it"
                ) from e
            if arr.shape != (32, 32, 3):
                raise TrainingDataError(
                    f"{path}: member {member.name}: expected 32x32 RGB, got {arr.shape}: resize it to 32x32"
                )
            images.append(arr)
            labels.append(index[cls])
            per_class[cls] += 1
    if not images:
        raise TrainingDataError(f"{path}: the archive holds no photos: give the CIFAR-10 archive")
    return np.stack(images), np.asarray(labels, dtype=np.int64)
