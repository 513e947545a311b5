"""Sampled payload logs: what the typed endpoints were asked and what they answered, as JSON lines.

Off by default; NNSERVE_PAYLOAD_LOG_DIR turns it on, NNSERVE_PAYLOAD_LOG_SAMPLE says which share of
predictions is logged. Each entry: time (UTC), request id (X-BentoML-Request-ID), model, version,
route, the request (the validated rows; for photos their byte sizes, not the pixels) and the answer
(with its warnings). The trainers can read them back as training data once outcomes are joined.

A request never waits for the disk: `submit` appends to a bounded queue and returns; a thread of its
own, woken by the first entry and waiting GATHER_S for more, serialises and writes them as one batch
(one SQLite transaction, one flush), and rotates each worker's file (payloads-<pid>.jsonl, then .1,
.2, ...) at NNSERVE_PAYLOAD_LOG_MAX_BYTES, keeping NNSERVE_PAYLOAD_LOG_MAX_FILES; the whole directory
(every worker's files, those of workers gone, outcomes.sqlite) keeps within NNSERVE_PAYLOAD_LOG_DIR_MAX_BYTES
(service/dataplane/logbudget.py). When the writer falls behind
and the queue is full, the entry is dropped and counted (nnserve_payload_log_entries_total{outcome=
"dropped"}), never waited for: logging must not become the latency of the service. Written entries
are counted the same way (outcome="written"), so written + dropped = sampled, always. Entries still
queued when the worker exits are written first (atexit).

The /v2 (Open Inference Protocol) routes are not logged: their bodies are tensors, not features.
Each logged prediction's per-row outputs also go to outcomes.sqlite, for outcome feedback
(service/dataplane/feedback.py): an entry that was dropped cannot be joined to an outcome.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from service import telemetry
from service.dataplane.feedback import Outcomes
from service.dataplane.logbudget import Budget

log = logging.getLogger(__name__)
GATHER_S = 0.05  # a woken writer waits this long first: at thousands of entries a second, a batch per wake
FAILURE_LOG_EVERY_S = 60.0


class PayloadLog:
    def __init__(
        self, directory: Path, sample: float, max_bytes: int, max_files: int, queue: int, outcomes: Outcomes,
        budget: int = 1 << 30,
    ) -> None:  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True)
        self.outcomes = outcomes  # each logged prediction's outputs, for outcome feedback
        self.budget = Budget(directory, budget, outcomes)  # the whole directory's bytes, every worker's
        self.failing: str | None = None  # why writing fails now (a full disk): said once a minute, not per batch
        self.said_at = -FAILURE_LOG_EVERY_S
        self.path = directory / f"payloads-{os.getpid()}.jsonl"
        self.sample, self.max_bytes, self.max_files, self.limit = sample, max_bytes, max_files, queue
        self.queue: deque[tuple[float, dict[str, Any], list[Any]]] = deque()
        self.queued: dict[str, tuple[float, dict[str, Any], list[Any]]] = {}  # the same entries, by request id
        self.wake = threading.Event()
        self.lock = threading.Lock()  # the writer thread and the exit hook
        self.written = self.dropped = 0
        self.file = self.path.open("ab")  # bytes, its size counted here: a text file's tell() is slow
        self.size = self.file.tell()
        self.thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def sampled(self) -> bool:
        """Whether this prediction is logged: drawn before its entry is built, which a sample rate below
        one spares most requests."""
        return self.sample >= 1 or random.random() < self.sample

    def submit(self, entry: dict[str, Any], outputs: list[Any]) -> None:
        """In the event loop: a sampled entry (and its per-row outputs) joins the queue, or is dropped and
        counted. Never blocks."""
        if len(self.queue) >= self.limit:
            self.dropped += 1
            telemetry.count_payload("dropped")
            return
        item = (time.time(), entry, outputs)
        self.queue.append(item)
        self.queued[entry["request_id"]] = item
        self.wake.set()

    def remember_now(self, request_id: str) -> bool:
        """In the event loop: a prediction still queued here is stored for the feedback join at once,
        so that feedback sent right after its answer is joined (the writer stores it again, the same)."""
        item = self.queued.get(request_id)
        if item is None:
            return False
        at, entry, outputs = item
        self.outcomes.remember([(request_id, entry["model"], entry["version"], at, outputs)])
        return True

    def _run(self) -> None:
        self._tidy()  # what earlier workers left (their files, a grown store) counts from the start
        while True:
            self.wake.wait()
            time.sleep(GATHER_S)  # let entries gather: one transaction, one write, one GIL hand-over per batch
            self.wake.clear()
            try:
                self._drain()
            except Exception as e:  # a full disk or a removed directory: tried again at the next entry
                self._failed(e)
            else:
                self._recovered()
            if self.budget.due():
                self._tidy()

    def _tidy(self) -> None:
        try:
            self.budget.enforce()
        except Exception as e:  # the budget is kept at the next round
            self._failed(e)

    def _failed(self, e: Exception) -> None:
        """One line a minute while writing fails, with what was dropped since: a traceback per batch
        (1,311 in 40 s on a full disk) would bury the rest of the log."""
        now = time.monotonic()
        self.failing = f"{type(e).__name__}: {e}"
        if now - self.said_at >= FAILURE_LOG_EVERY_S:
            self.said_at = now
            log.error("payload log %s: writing fails (%s); entries are dropped and counted until it works again "
                      "(%d dropped so far)", self.path.parent, self.failing, self.dropped)  # fmt: skip

    def _recovered(self) -> None:
        if self.failing is not None:
            log.warning("payload log %s: writing works again (%d dropped so far)", self.path.parent, self.dropped)
            self.failing, self.said_at = None, -FAILURE_LOG_EVERY_S

    def _drain(self) -> None:
        with self.lock:
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), 512))]
                for _, entry, _ in batch:
                    self.queued.pop(entry["request_id"], None)
                done = 0
                try:
                    self.outcomes.remember([(e["request_id"], e["model"], e["version"], at, o) for at, e, o in batch])
                    for at, entry, _ in batch:
                        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
                        line = json.dumps({"time": stamp, **entry}, default=str, ensure_ascii=False) + "\n"
                        data = line.encode()
                        if self.size + len(data) > self.max_bytes and self.size > 0:
                            self._rotate()
                        self.file.write(data)
                        self.size += len(data)
                        done += 1
                finally:  # what could not be written is counted as dropped: written + dropped = sampled
                    self.written += done
                    self.dropped += len(batch) - done
                    telemetry.count_payload("written", done)
                    telemetry.count_payload("dropped", len(batch) - done)
            self.file.flush()

    def _rotate(self) -> None:
        """payloads-<pid>.jsonl -> .1 -> .2 ...; the oldest beyond max_files goes."""
        self.file.close()
        for i in range(self.max_files - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                if i + 1 >= self.max_files:
                    older.unlink()
                else:
                    older.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.max_files > 1:
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self.file = self.path.open("ab")
        self.size = 0

    def close(self) -> None:
        """What is still queued is written (at the worker's exit)."""
        try:
            self._drain()
        except Exception:
            log.exception("payload log %s: the last entries could not be written", self.path)


def make_payload_log(settings: Any) -> PayloadLog | None:
    if settings.payload_log_dir is None or settings.payload_log_sample <= 0:
        return None
    settings.payload_log_dir.mkdir(parents=True, exist_ok=True)
    outcomes = Outcomes(
        settings.payload_log_dir, settings.feedback_ttl_s, settings.feedback_window, settings.feedback_keep_s
    )
    return PayloadLog(
        settings.payload_log_dir, settings.payload_log_sample, settings.payload_log_max_bytes,
        settings.payload_log_max_files, settings.payload_log_queue, outcomes, settings.payload_log_dir_max_bytes,
    )  # fmt: skip
