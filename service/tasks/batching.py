"""Dynamic batching: concurrent requests for one model share one onnxruntime run.

Under load, requests for a model arrive while it is busy. Rather than running them one after another,
the batcher runs whatever has queued as one batch (at most `max_rows` rows or photos), as Triton's
dynamic batcher and BentoML's adaptive batching do. With `max_wait_s` 0 (the default; a wait is asked
for with NNSERVE_DYNAMIC_BATCH_WAIT_MS) it never waits to fill a batch: a lone request runs at once, and
batches grow with load. `inline` runs the model in the event loop, for tabular rows and small photos on
the CPU, which take less than a thread hop costs (each adapter's make_batcher decides; an image model on
a GPU gets none by default: service/tasks/image/adapter.py, photo_batcher, says what was measured).

`pad` rounds each batch up to a power of two (1, 2, 4, ... max_rows) with zero rows, so that only a
few shapes ever reach the session and each can be warmed up at load (`bucket_sizes`): on CUDA, the
first run of a new shape pays for cuDNN's algorithm search. On the CPU padding would only add work.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np


def bucket_sizes(max_rows: int) -> list[int]:
    """The padded batch sizes: powers of two below max_rows, and max_rows itself."""
    sizes, size = [], 1
    while size < max_rows:
        sizes.append(size)
        size *= 2
    return [*sizes, max_rows]


Inputs = tuple[np.ndarray, ...]  # one array per model input, rows first


class Batcher:
    def __init__(
        self,
        run: Callable[..., np.ndarray],
        max_rows: int,
        max_wait_s: float = 0.0,
        pad: bool = False,
        observe: Callable[[int], None] = lambda rows: None,  # told the rows of each run (a metric)
        inline: bool = False,
    ) -> None:
        if inline and max_wait_s:  # waiting would hold the event loop's other requests too
            raise ValueError("an inline batcher never waits: max_wait_s must be 0")
        self.run = run  # the model: its inputs (a batch each) in, its output out
        self.observe = observe
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.buckets = bucket_sizes(max_rows) if pad else []
        self.inline = inline  # run in the event loop: for models that take microseconds
        self.pending: deque[tuple[Inputs, asyncio.Future]] = deque()
        self._worker: asyncio.Task | None = None  # the drain under way (a thread's runs)
        self._due_on: asyncio.AbstractEventLoop | None = None  # the loop an inline drain is due on, next turn

    def describe(self) -> dict[str, Any]:
        return {"max_batch": self.max_rows, "max_wait_ms": self.max_wait_s * 1000, "padded_sizes": self.buckets}

    async def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """Runs one request's rows (one array per model input) in a shared batch; returns their outputs."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((inputs, future))
        if self.inline:  # a callback rather than a task: the run is in the event loop either way, and a
            if self._due_on is not loop:  # task cost a one-row request more than its model did
                self._due_on = loop
                loop.call_soon(self._drain_inline)
        elif self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _drain_inline(self) -> None:
        """What queued while the loop went round runs now, as one batch; what queues later runs at the
        loop's next turn, after the requests just answered (and new ones) have had theirs."""
        self._due_on = None
        taken = self._take()
        if taken:
            batch = self._batch(taken)
            try:
                out = self._run_padded(batch)
            except Exception as e:
                self._fail(taken, e)
            else:
                self._answer(taken, out)
        if self.pending:
            self._due_on = asyncio.get_running_loop()
            self._due_on.call_soon(self._drain_inline)

    async def _drain(self) -> None:
        while self.pending:
            if self.max_wait_s and self._queued_rows() < self.max_rows:
                await asyncio.sleep(self.max_wait_s)  # let a batch gather (GPU)
            taken = self._take()
            if not taken:
                continue
            batch = self._batch(taken)
            try:
                out = await anyio.to_thread.run_sync(self._run_padded, batch)
            except Exception as e:
                self._fail(taken, e)
                continue
            self._answer(taken, out)

    @staticmethod
    def _batch(taken: list[tuple[Inputs, asyncio.Future]]) -> Inputs:
        if len(taken) == 1:  # a request alone: its own arrays (concatenating one array copies it)
            return taken[0][0]
        return tuple(np.concatenate(arrays) for arrays in zip(*(inputs for inputs, _ in taken), strict=True))

    @staticmethod
    def _fail(taken: list[tuple[Inputs, asyncio.Future]], error: Exception) -> None:
        """The model failed: every request of the batch gets the error."""
        for _, future in taken:
            if not future.done():
                future.set_exception(error)

    def _answer(self, taken: list[tuple[Inputs, asyncio.Future]], out: np.ndarray) -> None:
        start = 0
        for inputs, future in taken:
            rows = len(inputs[0])
            if not future.done():  # a cancelled request (timeout, disconnect) is skipped
                future.set_result(out[start : start + rows])
            start += rows
        self.observe(start)

    def _queued_rows(self) -> int:
        return sum(len(inputs[0]) for inputs, future in self.pending if not future.done())

    def _take(self) -> list[tuple[Inputs, asyncio.Future]]:
        """Requests in arrival order while they fit in max_rows (the first always: a request larger
        than max_rows runs alone). Requests already cancelled are dropped."""
        taken: list[tuple[Inputs, asyncio.Future]] = []
        rows = 0
        while self.pending:
            inputs, future = self.pending[0]
            if future.done():
                self.pending.popleft()
                continue
            if taken and rows + len(inputs[0]) > self.max_rows:
                break
            taken.append(self.pending.popleft())
            rows += len(inputs[0])
        return taken

    def _run_padded(self, batch: Inputs) -> np.ndarray:
        n = len(batch[0])
        size = next((b for b in self.buckets if b >= n), n)
        if size > n:
            batch = tuple(np.concatenate([a, np.zeros((size - n, *a.shape[1:]), dtype=a.dtype)]) for a in batch)
        return self.run(*batch)[:n]
