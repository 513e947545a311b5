"""Drift: what a model is sent now against what it was made with (its card's `reference`).

Each served version keeps a sliding window of its latest rows (NNSERVE_DRIFT_WINDOW_ROWS, none older
than NNSERVE_DRIFT_WINDOW_S), each row as one bin per feature and per output, binned as the card's
reference distributions are. Two measures per distribution, window against reference:

- PSI, the population stability index, sum (w - r) ln(w / r) over bins (fractions floored at 1e-4):
  the credit-scoring rule of thumb reads < 0.1 as stable, 0.1-0.2 as moderate, > 0.2 as a shift;
- the Jensen-Shannon distance (base 2): bounded in [0, 1], symmetric, and defined on empty bins,
  where PSI leans on the floor.

A request pays one list append: `record` keeps references to the arrays the model already ran on, and
every BIN_EVERY requests they are concatenated and binned in one pass. Once a second
(service/dataplane/plane.py), or when the drift route is read, the window's figures are computed and
the Prometheus gauges set. A feature whose PSI passes NNSERVE_DRIFT_PSI_THRESHOLD over at least
NNSERVE_DRIFT_MIN_ROWS rows is a warning in /v1/health, never a readiness failure: a shifted market is
the model's problem, not the worker's.
A date feature (kind "time") is measured and shown but never called drifted: any month of sales
sits in a bin or two of a training split that spans many (King County's validation months: PSI 8.3),
and that is time passing, not a shift.

Every worker keeps a window of the rows it ran, and the service answers for all of them: once a second
each worker publishes its windows' bin counts to the others (service/workers.py), and every figure,
gauge and warning is computed from the counts of every worker summed. One worker taking most of the
traffic (a keep-alive client) no longer leaves another with a 2-row window whose PSI of 8 would be
the highest and fire the alert: each worker publishes the same, service-wide figures.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from service.cards import Distribution, ReferenceCard
from service.tasks.base import Adapter
from service.workers import Workers

log = logging.getLogger(__name__)
FLOOR = 1e-4  # a bin's smallest fraction in PSI: an empty bin would make it infinite
FOLD_EVERY_S = 1.0
BIN_EVERY = 256  # requests' rows binned together

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
        self.offsets = np.cumsum([0, *(d.bins() for d in reference.distributions)])  # each one's first bin
        self.times = np.full(window_rows, -np.inf)  # -inf: an empty slot
        self.at = 0  # the next slot written
        self.rows_seen = 0
        self.failed = False
        self.last: dict[str, Any] = self.figures([self.fold()])

    def record(self, parts: tuple[np.ndarray, ...]) -> None:
        """The arrays one run took and gave (never copied, never changed after). Rows beyond a
        window's worth waiting to be binned would be overwritten at once: the oldest go now. Every
        BIN_EVERY requests they are binned: a second's worth at once (4,400 one-row requests) held
        the event loop 3.5 ms, and the requests that came meanwhile waited."""
        self.pending.append((time.monotonic(), parts))
        self.pending_rows += len(parts[-1])
        while self.pending_rows - len(self.pending[0][1][-1]) >= self.window_rows:
            self.pending_rows -= len(self.pending.popleft()[1][-1])
        if len(self.pending) >= BIN_EVERY:
            self.bin_pending()

    def bin_pending(self) -> None:
        items, self.pending, self.pending_rows = self.pending, deque(), 0
        if items and not self.failed:
            try:
                self._add(items)
            except Exception:  # a surprise in a card's reference must not take the requests with it
                log.exception("drift of %s: binning failed; drift is off for this version", self.name)
                self.failed = True

    def fold(self, now: float | None = None) -> dict[str, Any]:
        """Bins what is pending into the window; the live rows' counts per distribution (`counts`)."""
        self.bin_pending()
        now = time.monotonic() if now is None else now
        live = self.times > (now - self.window_s if self.window_s > 0 else -np.inf)
        rows = int(live.sum())
        bins = self.bins if rows == self.window_rows else self.bins[live]  # (a full window: no copy)
        # One bincount for every distribution: each column's bins shifted past the ones before it.
        counted = np.bincount((bins + self.offsets[:-1]).ravel(), minlength=self.offsets[-1])
        counts = [counted[a:b].tolist() for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]
        return {"rows": rows, "rows_seen": self.rows_seen, "counts": counts, "failed": self.failed}

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

    def figures(self, counted: list[dict[str, Any]]) -> dict[str, Any]:
        """The figures of the windows whose `fold()` counts are `counted` (every worker's), summed."""
        shapes = [d.bins() for d in self.reference.distributions]
        counted = [c for c in counted if [len(x) for x in c["counts"]] == shapes]  # another card: not summed
        rows = sum(c["rows"] for c in counted)
        figures: dict[str, Any] = {}
        for j, (d, expected) in enumerate(zip(self.reference.distributions, self.expected, strict=True)):
            counts = np.sum([c["counts"][j] for c in counted], axis=0) if counted else np.zeros(d.bins())
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
        self.last = {
            "rows": rows,
            "rows_seen": sum(c["rows_seen"] for c in counted),
            "workers": len(counted),
            "window": {"rows": self.window_rows, "seconds": self.window_s or None},
            "threshold": {"psi": self.threshold, "min_rows": self.min_rows},
            "reference": {"features": self.reference.features_from, "outputs": self.reference.outputs_from},
            "drifted": [name for name, f in figures.items() if f["drifted"]],
            "distributions": figures,
            **({"error": "binning failed: see the server log"} if any(c["failed"] for c in counted) else {}),
        }
        return self.last


def warnings(drift: Drift) -> list[str]:
    """The drifted distributions of the last figures, as /v1/health says them."""
    last = drift.last
    return [
        f"{drift.name}: {name} drifted (PSI {last['distributions'][name]['psi']:.3f} > {drift.threshold} over "
        f"{last['rows']:,} rows)"
        for name in last["drifted"]
    ]


class DriftBoard:
    """This worker's drift windows, one per served version that has a reference, and the service-wide
    figures: its counts published for the other workers, theirs summed with its own."""

    def __init__(self, settings: Any, workers: Workers) -> None:
        self.settings, self.workers = settings, workers
        self.windows: dict[int, tuple[Adapter, Drift]] = {}  # by id(adapter): a version reloaded is another

    def record(self, adapter: Adapter, parts: tuple[np.ndarray, ...]) -> None:
        """What one run took and gave: one append (the window of a version seen for the first time is made)."""
        entry = self.windows.get(id(adapter))
        if entry is None:
            entry = self.windows[id(adapter)] = (adapter, self._window(adapter))
        if entry[1] is not None:
            entry[1].record(parts)

    def _window(self, adapter: Adapter) -> Drift | None:
        reference, settings = adapter.model.card.reference, self.settings
        if reference is None or settings.drift_window_rows <= 0:
            return None
        return Drift(f"{adapter.name} v{adapter.version}", reference, adapter.drift_columns, settings.drift_window_rows,
                     settings.drift_window_s, settings.drift_psi_threshold, settings.drift_min_rows)  # fmt: skip

    def fold(self, served: list[Adapter]) -> dict[tuple[str, str], dict[str, Any]]:
        """Every served version's figures over every worker's rows: this worker's windows folded and
        published, the others' counts gathered and summed. Windows of versions no longer served go."""
        keep = {id(a) for a in served}
        self.windows = {k: v for k, v in self.windows.items() if k in keep}
        for adapter in served:
            if id(adapter) not in self.windows:
                self.windows[id(adapter)] = (adapter, self._window(adapter))
        own = {_key(a): w.fold() for a, w in self.windows.values() if w is not None}
        self.workers.publish("drift", own)
        everyone = list(self.workers.gather("drift").values())
        figures = {}
        for adapter, window in self.windows.values():
            if window is not None:
                key = _key(adapter)
                figures[(adapter.name, adapter.version)] = window.figures([w[key] for w in everyone if key in w])
        return figures

    def warnings(self) -> list[str]:
        return [w for _, window in self.windows.values() if window is not None for w in warnings(window)]


def _key(adapter: Adapter) -> str:
    return f"{adapter.name}\x1f{adapter.version}"
