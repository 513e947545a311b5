"""Drift: what a model is sent now against what it was made with (its card's `reference`).

Each served version keeps a sliding window of its latest rows (NNSERVE_DRIFT_WINDOW_ROWS, none older
than NNSERVE_DRIFT_WINDOW_S), each row as one bin per feature and per output, binned as the card's
reference distributions are. Two measures per distribution, window against reference:

- PSI, the population stability index, sum (w - r) ln(w / r) over bins (fractions floored at 1e-4):
  the credit-scoring rule of thumb reads < 0.1 as stable, 0.1-0.2 as moderate, > 0.2 as a shift;
- the Jensen-Shannon distance (base 2): bounded in [0, 1], symmetric, and defined on empty bins,
  where PSI leans on the floor.

A request pays one list append: `record` keeps references to the arrays the model already ran on. Once
a second (`watch`), or when the drift route is read, the pending arrays are concatenated and binned
in one pass, the window's figures computed, and the Prometheus gauges set. A feature whose PSI passes
NNSERVE_DRIFT_PSI_THRESHOLD over at least NNSERVE_DRIFT_MIN_ROWS rows is a warning in /v1/health,
never a readiness failure: a shifted market is the model's problem, not the worker's.
A date feature (kind "time") is measured and shown but never called drifted: any month of sales
sits in a bin or two of a training split that spans many (King County's validation months: PSI 8.3),
and that is time passing, not a shift.

Every worker keeps its own window, as it keeps its own models: the requests a worker gets are a
random share of the traffic, so its window is a sample of the same distribution (the gauges carry
the highest worker's figure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service import telemetry
from service.cards import Distribution, ReferenceCard

log = logging.getLogger(__name__)
FLOOR = 1e-4  # a bin's smallest fraction in PSI: an empty bin would make it infinite
FOLD_EVERY_S = 1.0

Columns = Callable[[tuple[np.ndarray, ...]], list[np.ndarray]]  # recorded parts -> one 1-D array per distribution


def bin_of(d: Distribution, values: np.ndarray) -> np.ndarray:
    """Each value's bin in `d`: by edges for numbers (NaN in the last bin), by code for codes (a code
    not among the reference's most frequent: the last bin, "other")."""
    if d.edges is not None:
        return np.searchsorted(np.asarray(d.edges), values, side="right")
    codes = np.asarray(d.codes, dtype=np.int64)
    if not len(codes):
        return np.zeros(len(values), np.int64)
    order = np.argsort(codes)
    ranked = codes[order]
    at = np.minimum(np.searchsorted(ranked, values), len(ranked) - 1)
    return np.where(ranked[at] == values, order[at], len(codes))


def psi(reference: np.ndarray, window: np.ndarray) -> float:
    r, w = np.maximum(reference, FLOOR), np.maximum(window, FLOOR)
    return float(np.sum((w - r) * np.log(w / r)))


def js_distance(reference: np.ndarray, window: np.ndarray) -> float:
    m = (reference + window) / 2

    def kl(p: np.ndarray) -> float:
        nz = p > 0
        return float(np.sum(p[nz] * np.log2(p[nz] / m[nz])))

    return float(np.sqrt(max(0.0, (kl(reference) + kl(window)) / 2)))


class Drift:
    """One served version's window of rows, binned, against its card's reference."""

    def __init__(
        self, name: str, reference: ReferenceCard, columns: Columns, window_rows: int, window_s: float,
        threshold: float, min_rows: int,
    ) -> None:  # fmt: skip
        self.name = name  # model and version, for the log
        self.reference = reference
        self.columns = columns
        self.window_rows, self.window_s = window_rows, window_s
        self.threshold, self.min_rows = threshold, min_rows
        self.expected = [np.asarray(d.fractions, dtype=np.float64) for d in reference.distributions]
        self.pending: deque[tuple[float, tuple[np.ndarray, ...]]] = deque()
        self.pending_rows = 0
        self.bins = np.zeros((window_rows, len(reference.distributions)), np.int32)
        self.times = np.full(window_rows, -np.inf)  # -inf: an empty slot
        self.at = 0  # the next slot written
        self.rows_seen = 0
        self.failed = False
        self.last: dict[str, Any] = self._figures(np.zeros(window_rows, bool))

    def record(self, parts: tuple[np.ndarray, ...]) -> None:
        """The arrays one run took and gave (never copied, never changed after). Rows beyond a
        window's worth waiting to be binned would be overwritten at once: the oldest go now."""
        self.pending.append((time.monotonic(), parts))
        self.pending_rows += len(parts[-1])
        while self.pending_rows - len(self.pending[0][1][-1]) >= self.window_rows:
            self.pending_rows -= len(self.pending.popleft()[1][-1])

    def fold(self, now: float | None = None) -> dict[str, Any]:
        """Bins what is pending into the window, and computes the window's figures."""
        items, self.pending, self.pending_rows = self.pending, deque(), 0
        if items and not self.failed:
            try:
                self._add(items)
            except Exception:  # a surprise in a card's reference must not take the requests with it
                log.exception("drift of %s: binning failed; drift is off for this version", self.name)
                self.failed = True
        now = time.monotonic() if now is None else now
        live = self.times > (now - self.window_s if self.window_s > 0 else -np.inf)
        self.last = self._figures(live)
        return self.last

    def _add(self, items: deque[tuple[float, tuple[np.ndarray, ...]]]) -> None:
        parts = tuple(np.concatenate([p[k] for _, p in items]) for k in range(len(items[0][1])))
        times = np.repeat([t for t, _ in items], [len(p[-1]) for _, p in items])
        columns = self.columns(parts)
        binned = np.stack([bin_of(d, c) for d, c in zip(self.reference.distributions, columns, strict=True)], 1)
        binned, times = binned[-self.window_rows :], times[-self.window_rows :]
        slots = (self.at + np.arange(len(times))) % self.window_rows
        self.bins[slots], self.times[slots] = binned, times
        self.at = int((self.at + len(times)) % self.window_rows)
        self.rows_seen += len(parts[-1])

    def _figures(self, live: np.ndarray) -> dict[str, Any]:
        rows = int(live.sum())
        figures: dict[str, Any] = {}
        for j, (d, expected) in enumerate(zip(self.reference.distributions, self.expected, strict=True)):
            counts = np.bincount(self.bins[live, j], minlength=d.bins())
            window = counts / rows if rows else np.zeros(d.bins())
            measured = rows > 0
            p = psi(expected, window) if measured else None
            figures[d.name] = {
                "kind": d.kind,
                "psi": p,
                "js_distance": js_distance(expected, window) if measured else None,
                "drifted": bool(d.kind != "time" and p is not None and rows >= self.min_rows and p > self.threshold),
                "reference": d.fractions,
                "window": [round(float(x), 6) for x in window],
                **({"edges": d.edges} if d.edges is not None else {"codes": d.codes}),
            }
        return {
            "rows": rows,
            "rows_seen": self.rows_seen,
            "window": {"rows": self.window_rows, "seconds": self.window_s or None},
            "threshold": {"psi": self.threshold, "min_rows": self.min_rows},
            "reference": {"features": self.reference.features_from, "outputs": self.reference.outputs_from},
            "drifted": [name for name, f in figures.items() if f["drifted"]],
            "distributions": figures,
            **({"error": "binning failed: see the server log"} if self.failed else {}),
        }


def warnings(drift: Drift) -> list[str]:
    """The drifted distributions of the last fold, as /v1/health says them."""
    last = drift.last
    return [
        f"{drift.name}: {name} drifted (PSI {last['distributions'][name]['psi']:.3f} > {drift.threshold} over "
        f"{last['rows']:,} rows)"
        for name in last["drifted"]
    ]


def make_drift(name: str, reference: ReferenceCard | None, columns: Columns, settings: Any) -> Drift | None:
    if reference is None or settings.drift_window_rows <= 0:
        return None
    return Drift(
        name, reference, columns, settings.drift_window_rows, settings.drift_window_s, settings.drift_psi_threshold,
        settings.drift_min_rows,
    )  # fmt: skip


def check_names(reference: ReferenceCard, expected: Sequence[str]) -> str | None:
    """A problem with the card's reference, or None: its distributions must be the adapter's columns."""
    names = [d.name for d in reference.distributions]
    if names != list(expected):
        return f"reference distributions {names}; this task tracks {list(expected)} in that order"
    for d in reference.distributions:
        if d.bins() != len(d.fractions) or (d.edges is None) == (d.codes is None):
            return f"reference distribution {d.name}: give edges or codes, and one fraction per bin"
    return None


async def watch(registry: Any) -> None:
    """Folds every served version's pending rows once a second and sets the gauges."""
    while True:
        await asyncio.sleep(FOLD_EVERY_S)
        for adapter in registry.table.adapters():  # the table of the moment: versions come and go
            if adapter.drift is not None:
                try:
                    telemetry.publish_drift(adapter.name, adapter.model.card.version, adapter.drift.fold())
                except Exception:  # say it, try again next time: the watch must not end
                    log.exception("drift of %s failed", adapter.drift.name)
