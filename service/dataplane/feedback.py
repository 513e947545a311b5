"""Outcome feedback: the observed outcome of a logged prediction (clicked or not, the sale price, the
true tag), sent back by its request id, joined to what the model answered, and measured online.

    POST /v1/<model>/feedback   {"request_id": "...", "outcome": 1}        (one row or photo)
                                {"request_id": "...", "outcomes": [...]}   (a batch, in its order)

The payload log's writer (service/dataplane/payloads.py) also records each logged prediction's per-row outputs
in one SQLite file in the payload log directory (outcomes.sqlite, WAL), so any worker can join an
outcome to a prediction another worker answered. Only logged predictions can be joined: with the
payload log off there is no feedback route (404 says so). An unknown request id, or one older than
NNSERVE_FEEDBACK_TTL_S, is a 404 naming it (after up to JOIN_WAIT_S: a prediction answered a moment
ago may still be on its way to the file); a second outcome for the same request is not counted again
(`counted: false`, and a `reason` saying when the first came).

Online metrics per model version, over its latest NNSERVE_FEEDBACK_WINDOW joined rows, by the task's own
measures (service/tasks/): AUC, log loss and calibration error for click probabilities, MAE and median
absolute percentage error for prices, top-1 accuracy for tags. In the drift route's `online` and as
nnserve_online_metric{model, version, measure} (every 10 s, service/dataplane/plane.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from service.errors import InvalidInput, ModelUnavailable, NotFound, field_error

log = logging.getLogger(__name__)
DB_FILE = "outcomes.sqlite"
PUBLISH_EVERY_S = 10.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (request_id TEXT PRIMARY KEY, model TEXT, version TEXT, time REAL,
                                        outputs TEXT);
CREATE TABLE IF NOT EXISTS feedback (request_id TEXT PRIMARY KEY, model TEXT, version TEXT, time REAL,
                                     outputs TEXT, outcomes TEXT);
CREATE INDEX IF NOT EXISTS feedback_by_model ON feedback (model, version, time);
CREATE INDEX IF NOT EXISTS feedback_by_time ON feedback (time);
CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (time);
"""
PRUNE_EVERY_S = 60.0
WAL_LIMIT = 64 * 1024 * 1024  # bytes of WAL kept after a checkpoint (a 137 MB WAL was seen under load)
JOIN_WAIT_S = 1.0  # how long feedback looks for a prediction answered a moment ago (the writer gathers for 50 ms)
JOIN_POLL_S = 0.01


def _outcome(value: Any) -> bool | int | float | str:
    """One check and one message (a three-way union would answer NaN with three errors); which of
    them the model's task takes is checked at the join (_check)."""
    if isinstance(value, bool | str) or (isinstance(value, int) and abs(value) < 2**63):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError("expected clicked (true/false, 1/0), a finite number or a label")


Outcome = Annotated[bool | float | str, PlainValidator(_outcome)]  # clicked (true/false, 1/0), a price, a label
Check = Callable[[Any, list[str | int]], None]  # an outcome, where it is in the request -> InvalidInput or nothing
Measures = Callable[[list[Any], list[Any]], dict[str, float | int | None]]  # outputs, outcomes -> figures


class Feedback(BaseModel):
    """The body of POST /v1/<model>/feedback."""

    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, description="The prediction's X-BentoML-Request-ID.")
    outcome: Outcome | None = Field(None, description="What happened, for a one-row (one-photo) prediction.")
    outcomes: list[Outcome] | None = Field(None, description="What happened to each row of a batch, in order.")


class Outcomes:
    def __init__(self, directory: Path, ttl_s: float, window: int, keep_s: float) -> None:
        self.path = directory / DB_FILE
        self.ttl_s, self.window, self.keep_s = ttl_s, window, keep_s
        self.pruned = 0.0  # when outcomes older than keep_s last went
        self.local = threading.local()  # a connection per thread: the writer's, the event loop's
        db = self.db()
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # pages freed by deletes go back to the disk
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file at once, an old one after:
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                with contextlib.suppress(sqlite3.OperationalError):  # another worker holds it: next start
                    db.execute("VACUUM")
        db.executescript(SCHEMA)

    def db(self) -> sqlite3.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")  # the WAL is cut back after a checkpoint
            self.local.conn = conn
        return conn

    def size(self) -> int:
        """The store's bytes on disk: the file, its WAL and shared memory."""
        return sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                   if p.exists())  # fmt: skip

    def shrink(self, excess: int) -> tuple[int, int]:
        """Drops the oldest rows (logged predictions and posted outcomes alike, the same share of each)
        until the file is `excess` bytes smaller, or empty; gives the space back. -> (rows, bytes freed)."""
        db, start, rows = self.db(), self.size(), 0
        for _ in range(8):
            size = self.size()
            if start - size >= excess:
                break
            share = min(1.0, (excess - (start - size)) / max(size, 1) * 1.25 + 0.02)
            dropped = 0
            with db:
                for table in ("predictions", "feedback"):
                    n = math.ceil(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] * share)
                    dropped += db.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY time LIMIT ?)", (n,)
                    ).rowcount
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("PRAGMA incremental_vacuum")
            rows += dropped
            if not dropped:
                break
        return rows, max(0, start - self.size())

    def remember(self, rows: list[tuple[str, str, str, float, list[Any]]]) -> None:
        """In the payload log's writer thread: the logged predictions' per-row outputs; predictions past
        the join's TTL go, and (once a minute) outcomes past NNSERVE_FEEDBACK_KEEP_S: the file stays bounded."""
        db, now = self.db(), time.time()
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?)",
                [(r, m, v, t, json.dumps(o)) for r, m, v, t, o in rows],
            )
            if now - self.pruned >= PRUNE_EVERY_S:  # once a minute, by index: a scan at each batch grew with the table
                db.execute("DELETE FROM predictions WHERE time < ?", (now - self.ttl_s,))
                db.execute("DELETE FROM feedback WHERE time < ?", (now - self.keep_s,))
                self.pruned = now

    def _logged(self, request_id: str) -> tuple[str, str, float, str] | None:
        return (
            self.db()
            .execute("SELECT model, version, time, outputs FROM predictions WHERE request_id = ?", (request_id,))
            .fetchone()
        )

    async def join(self, model: str, check: Check, body: Feedback) -> dict[str, Any]:
        """The outcome(s) of a logged prediction of `model`, each checked by `check` (the task's: clicked,
        a price, a label), stored beside it."""
        try:
            return await self._join(model, check, body)
        except sqlite3.OperationalError as e:  # a full disk, a file locked past the timeout: not the client's doing
            raise ModelUnavailable(f"the outcome could not be stored ({e}: {self.path}); retry later") from None

    async def _join(self, model: str, check: Check, body: Feedback) -> dict[str, Any]:
        """The outcome(s) checked against the task and stored beside its logged prediction. A prediction
        answered a moment ago may still be on its way to the file (the payload log's writer gathers for
        GATHER_S, in whichever worker answered it): a request id not found yet is looked for again, for
        up to JOIN_WAIT_S, so feedback sent right after its answer is joined."""
        request_id = body.request_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_WAIT_S
        while (row := self._logged(request_id)) is None and loop.time() < deadline:
            await asyncio.sleep(JOIN_POLL_S)  # polling the file another process writes, with a deadline
        if row is None or row[0] != model or row[2] < time.time() - self.ttl_s:
            why = "expired" if row is not None and row[0] == model else "unknown"
            raise NotFound(
                f"request id {request_id}: no logged prediction of {model} ({why}: only sampled predictions of "
                f"the last {self.ttl_s:g} s can be joined)",
                [field_error(["request_id"], f"the id of a logged {model} prediction", request_id, why)],
            )
        outputs = json.loads(row[3])
        outcomes = body.outcomes if body.outcomes is not None else [body.outcome]
        if len(outcomes) != len(outputs) or (body.outcomes is None and body.outcome is None):
            field = "outcomes" if body.outcomes is not None else "outcome"
            expected = f"{len(outputs)} outcomes, one per row of the prediction, in `outcomes`"
            raise InvalidInput(
                f"{field}: expected {expected}", [field_error([field], expected, len(outcomes), "length")]
            )
        for i, o in enumerate(outcomes):
            check(o, ["outcomes", i] if body.outcomes is not None else ["outcome"])
        outcomes = [int(o) if isinstance(o, bool) else o for o in outcomes]
        return self._store(request_id, model, row, outcomes)

    def _store(self, request_id: str, model: str, row: tuple[str, str, float, str], outcomes: list[Any]) -> dict:
        with self.db() as db:
            counted = db.execute(
                "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?, ?, ?)",
                (request_id, model, row[1], time.time(), row[3], json.dumps(outcomes)),
            ).rowcount
            first = None if counted else db.execute(
                "SELECT time FROM feedback WHERE request_id = ?", (request_id,)
            ).fetchone()  # fmt: skip
        answer = {"request_id": request_id, "model": model, "version": row[1], "rows": len(outcomes),
                  "counted": counted == 1}  # fmt: skip
        if first is not None:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first[0]))
            answer["reason"] = f"an outcome for this request was already posted ({at}); the first one counts"
        return answer

    def pairs(self, model: str) -> dict[str, tuple[list[Any], list[Any]]]:
        """Each version's latest `window` (output, outcome) rows: at most `window` joined requests per
        version are read (each holds one row or more), not the model's whole history."""
        found: dict[str, tuple[list[Any], list[Any]]] = {}
        db = self.db()
        for (version,) in db.execute("SELECT DISTINCT version FROM feedback WHERE model = ?", (model,)).fetchall():
            got, seen = found.setdefault(version, ([], []))
            rows = db.execute(
                "SELECT outputs, outcomes FROM feedback WHERE model = ? AND version = ? ORDER BY time DESC LIMIT ?",
                (model, version, self.window),
            )
            for outputs, outcomes in rows:
                if len(got) >= self.window:
                    break
                got.extend(json.loads(outputs))
                seen.extend(json.loads(outcomes))
        return found

    def online(self, model: str, measures: Measures) -> dict[str, dict[str, float | int | None]]:
        """Each version's measures (the task's) over its latest joined rows."""
        return {v: measures(p, o) for v, (p, o) in self.pairs(model).items()}
