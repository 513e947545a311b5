"""Photo bytes for tests: real CIFAR validation photos, and crafted bad files."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

from PIL import Image


def cifar_photos(tar_path: Path, per_class: int = 1) -> list[tuple[str, bytes]]:
    """(class, JPEG bytes) for the first `per_class` photos of each class."""
    out: list[tuple[str, bytes]] = []
    seen: dict[str, int] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if member.isfile():
                cls = member.name.split("/")[0]
                if seen.get(cls, 0) < per_class:
                    seen[cls] = seen.get(cls, 0) + 1
                    out.append((cls, tar.extractfile(member).read()))  # type: ignore[union-attr]
    return out


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (1.6 G by default): a decompression bomb."""
    data = encode(Image.new("L", (1, 1)), "PNG")
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]
