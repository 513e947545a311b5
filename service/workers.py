"""What one worker process tells the others of the same server, so that the service answers as one.

Workers share nothing in memory (BentoML starts each on its own); they share a folder, FOLDER under
the server's Prometheus multiprocess folder (BentoML empties it when the server starts), or a private
one when there is a single process (tests, `standalone`). In it:

- `epoch`: a counter a management call raises after changing the policy file. Every worker looks at
  the folder when it moves (a stat every EPOCH_POLL_S) and says which epoch it has applied, so that
  the call returns once every worker serves the new state (Triton's contract), or names the ones that
  did not within the timeout;
- `<kind>-<pid>.json`: what each worker publishes for the others: the epoch it applied, its drift
  windows' counts (service/dataplane/drift.py). Files of processes that are gone are ignored, and
  removed by whoever finds them.

Every write is a new file renamed into place: a reader sees the old content or the new, never half.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

FOLDER = "nnserve-workers"
EPOCH_POLL_S = 0.05  # how often a worker looks whether a management call moved the epoch


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class Workers:
    def __init__(self, folder: Path | None = None) -> None:
        if folder is None:
            shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # one per server: BentoML sets it for its workers
            if shared:
                folder = Path(shared) / FOLDER
            else:  # a process of its own: its folder goes with it
                folder = Path(tempfile.mkdtemp(prefix="nnserve-workers-"))
                weakref.finalize(self, shutil.rmtree, folder, True)
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.pid = os.getpid()
        self.epoch_file = folder / "epoch"

    # --- what workers publish --------------------------------------------------------------------------
    def publish(self, kind: str, data: Any) -> None:
        path = self.folder / f"{kind}-{self.pid}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def gather(self, kind: str) -> dict[int, Any]:
        """Every live worker's latest `kind`, this one's included, by pid."""
        found: dict[int, Any] = {}
        for path in self.folder.glob(f"{kind}-*.json"):
            pid = int(path.stem.rsplit("-", 1)[1])
            if not alive(pid):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            try:
                found[pid] = json.loads(path.read_text())
            except (OSError, ValueError):  # replaced as it was read: the next look has it
                continue
        return found

    # --- management epochs -------------------------------------------------------------------------------
    def stamp(self) -> tuple[int, int] | None:
        try:
            st = self.epoch_file.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def epoch(self) -> int:
        try:
            return int(self.epoch_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def bump(self) -> int:
        """A new epoch: every worker looks again, and says when it has."""
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            epoch = self.epoch() + 1
            tmp = self.folder / f".epoch.{self.pid}"
            tmp.write_text(str(epoch))
            tmp.replace(self.epoch_file)
        finally:
            os.close(fd)
        return epoch

    def applied(self, epoch: int) -> None:
        self.publish("applied", {"epoch": epoch, "time": time.time()})

    async def wait_applied(self, epoch: int, timeout_s: float) -> list[int]:
        """Waits until every live worker has applied `epoch`; the pids of those that had not by the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            late = sorted(pid for pid, state in self.gather("applied").items() if state.get("epoch", 0) < epoch)
            if not late or time.monotonic() >= deadline:
                return late
            await asyncio.sleep(0.01)  # polling the other workers' files, with a deadline
