"""One byte budget for the whole payload log directory (NNSERVE_PAYLOAD_LOG_DIR_MAX_BYTES): every
worker's JSON lines, their rotated files, the files of workers that are gone, and outcomes.sqlite.

Each worker's writer thread enforces it every ENFORCE_EVERY_S (and once at start), one worker at a
time (a lock on the directory; a worker that finds it held skips its turn). Over budget, the oldest
data goes first, until the directory is back under TARGET of the budget:

1. log files, oldest first by modification time: rotated files, and the files of workers that are
   gone (a worker's file is named by its pid: kill -9 and restarts left them behind, never rotated);
   only the files live workers are writing are kept;
2. then the oldest rows of outcomes.sqlite (logged predictions, then posted outcomes), and the file
   is given back to the file system (WAL checkpoint, incremental vacuum).

What goes is counted (nnserve_payload_log_evicted_bytes_total{what}) and said in one log line a round.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from service import telemetry

log = logging.getLogger(__name__)
ENFORCE_EVERY_S = 10.0
TARGET = 0.9  # evict down to this share of the budget, so that the next round is not at once
LOG_FILE = re.compile(r"payloads-(\d+)\.jsonl(\.\d+)?$")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Budget:
    def __init__(self, directory: Path, max_bytes: int, outcomes: Any) -> None:
        self.directory, self.max_bytes, self.outcomes = directory, max_bytes, outcomes
        self.last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self.last >= ENFORCE_EVERY_S

    def usage(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def evictable(self) -> list[Path]:
        """Log files no live worker writes, oldest first."""
        found = []
        for path in self.directory.iterdir():
            match = LOG_FILE.match(path.name)
            if match and (match.group(2) is not None or not alive(int(match.group(1)))):
                found.append((path.stat().st_mtime, path))
        return [path for _, path in sorted(found)]

    def enforce(self) -> None:
        """Brings the directory under its budget, if this worker's turn comes (see the module's docstring)."""
        self.last = time.monotonic()
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker is at it
            self._enforce()
        finally:
            os.close(fd)

    def _enforce(self) -> None:
        usage = self.usage()
        if usage <= self.max_bytes:
            return
        before, target = usage, int(self.max_bytes * TARGET)
        files = logged = 0
        for path in self.evictable():
            if usage <= target:
                break
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            usage -= size
            files, logged = files + 1, logged + size
        telemetry.count_evicted("logs", logged)
        rows = 0
        if usage > target:
            rows, freed = self.outcomes.shrink(usage - target)
            telemetry.count_evicted("outcomes", freed)
            usage = self.usage()
        log.warning("payload log %s over its budget (%s > %s bytes, NNSERVE_PAYLOAD_LOG_DIR_MAX_BYTES): dropped the "
                    "%d oldest log files (%s bytes) and %d oldest outcome rows; now %s bytes", self.directory,
                    f"{before:,}", f"{self.max_bytes:,}", files, f"{logged:,}", rows, f"{usage:,}")  # fmt: skip
