"""Reading the files an operator puts in the models directory (cards, the policy file) so that none can
take the service down.

Only regular files are opened (a FIFO would block the reader forever, as a hung network mount does),
within a size cap checked before reading, and a JSON document of any depth is parsed without a
RecursionError escaping. Every failure is one FileRefused naming the file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

MAX_CARD_BYTES = 16 * 1024 * 1024  # a Criteo card (26 hashed IDs, 2^20 buckets) is ~4.5 MB; 60 MB cost +60 MB a worker
MAX_POLICY_BYTES = 1024 * 1024  # thousands of models' policies; a 300 MB file peaked a worker at 1.2 GB a look


class FileRefused(ValueError):
    """A file that cannot be read as what it should be; the message names it and says why."""


def stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file does (modification time, size, inode); None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def check_regular(path: Path, limit: int | None = None) -> os.stat_result:
    """The file's stat, when it is a regular file (through symlinks) within `limit` bytes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise FileRefused(f"{path}: cannot read it ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{path}: not a regular file (a FIFO, a device or a folder is never opened)")
    if limit is not None and st.st_size > limit:
        raise FileRefused(f"{path}: {st.st_size:,} bytes, over the limit of {limit:,}")
    return st


def read_bytes(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them (a file growing while read is cut, then refused)."""
    check_regular(path, limit)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise FileRefused(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(data) > limit:
        raise FileRefused(f"{path}: over the limit of {limit:,} bytes")
    return data


def read_json(path: Path, limit: int) -> Any:
    """A regular file's JSON document; FileRefused for anything else (bad UTF-8, bad JSON, too deep)."""
    data = read_bytes(path, limit)
    try:
        return json.loads(data)
    except RecursionError:
        raise FileRefused(f"{path}: JSON nested too deep to read") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise FileRefused(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
