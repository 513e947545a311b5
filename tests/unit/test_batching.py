"""The dynamic batcher: concurrent requests share runs, each gets its own rows back, a lone request
runs at once, failures and cancellations stay with their requests, GPU batches are padded."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.tasks.batching import Batcher, bucket_sizes


class Model:
    """Doubles its input; records the batch sizes it ran; can be held to let requests queue up."""

    def __init__(self) -> None:
        self.runs: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(timeout=10)
        self.runs.append(len(batch))
        if np.isnan(batch).any():
            raise ValueError("bad batch")
        return batch * 2


def rows(start: int, n: int = 1) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


async def queued(batcher: Batcher, n: int) -> None:
    """Returns once `n` requests wait in the batcher (the model holds the one before them)."""
    while len(batcher.pending) < n:
        await asyncio.sleep(0)


async def running(model: Model) -> None:
    await asyncio.to_thread(model.entered.wait, 10)


async def two_queued_behind_a_running_one(second: np.ndarray, third: np.ndarray):
    """A batcher whose model is busy with a first request while two more wait; the model runs on
    once the caller sets model.gate. Returns (model, batcher, first, second, third)."""
    model = Model()
    batcher = Batcher(model, max_rows=8)
    model.gate.clear()
    first = asyncio.create_task(batcher(rows(0)))
    await running(model)
    tasks = [asyncio.create_task(batcher(x)) for x in (second, third)]
    await queued(batcher, 2)
    return model, batcher, first, *tasks


def test_bucket_sizes():
    assert bucket_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert bucket_sizes(24) == [1, 2, 4, 8, 16, 24]
    assert bucket_sizes(1) == [1]


def test_requests_that_queue_while_the_model_runs_share_the_next_run_and_get_their_own_rows():
    async def scenario():
        model = Model()
        batcher = Batcher(model, max_rows=8)
        model.gate.clear()  # the first run holds the model...
        first = asyncio.create_task(batcher(rows(0)))
        await running(model)  # ...while ten more requests arrive (3 rows for one of them)
        others = [asyncio.create_task(batcher(rows(10 * i, 3 if i == 4 else 1))) for i in range(1, 11)]
        await queued(batcher, 10)
        model.gate.set()
        results = await asyncio.gather(first, *others)
        assert model.runs == [1, 8, 4]  # 1; then up to 8 rows in arrival order; then the rest
        for i, out in enumerate(results[1:], start=1):
            assert out.tolist() == (rows(10 * i, 3 if i == 4 else 1) * 2).tolist()

    asyncio.run(scenario())


def test_a_lone_request_runs_at_once_and_a_big_one_runs_alone():
    async def scenario():
        model = Model()
        batcher = Batcher(model, max_rows=4)
        assert (await batcher(rows(5))).tolist() == [[10.0]]
        assert (await batcher(rows(0, 9))).shape == (9, 1)
        assert model.runs == [1, 9]

    asyncio.run(scenario())


def test_a_failed_run_fails_only_its_own_requests():
    async def scenario():
        nan = np.full((1, 1), np.nan, dtype=np.float32)
        model, batcher, first, bad, mate = await two_queued_behind_a_running_one(nan, rows(1))
        model.gate.set()
        assert (await first).tolist() == [[0.0]]
        with pytest.raises(ValueError):
            await bad
        with pytest.raises(ValueError):  # it shared the failed run
            await mate
        assert (await batcher(rows(3))).tolist() == [[6.0]]  # the batcher still serves

    asyncio.run(scenario())


def test_a_cancelled_request_is_dropped_from_its_batch():
    async def scenario():
        model, _, first, gone, kept = await two_queued_behind_a_running_one(rows(1), rows(2))
        gone.cancel()  # a timeout or a disconnect
        model.gate.set()
        await first
        assert (await kept).tolist() == [[4.0]]
        assert model.runs == [1, 1]

    asyncio.run(scenario())


def test_gpu_batches_are_padded_to_a_bucket_and_a_wait_lets_them_fill():
    async def scenario():
        model = Model()
        sizes: list[int] = []
        batcher = Batcher(model, max_rows=8, max_wait_s=0.05, pad=True, observe=sizes.append)
        outs = await asyncio.gather(*(batcher(rows(i)) for i in range(3)))
        assert [o.tolist() for o in outs] == [[[0.0]], [[2.0]], [[4.0]]]
        assert model.runs == [4]  # three requests gathered by the wait, padded to 4
        assert sizes == [3]  # the metric counts real rows

    asyncio.run(scenario())


def test_inline_batches_of_two_input_models_keep_rows_with_their_requests():
    async def scenario():
        runs: list[int] = []

        def model(numeric, codes):  # a tabular model: two inputs, one output column
            runs.append(len(numeric))
            return numeric[:, :1] + codes[:, :1]

        batcher = Batcher(model, max_rows=4, inline=True)
        requests = [(np.full((1, 2), i, np.float32), np.full((1, 3), 100 * i, np.int64)) for i in range(6)]
        outs = await asyncio.gather(*(batcher(*r) for r in requests))
        assert [o.tolist() for o in outs] == [[[101.0 * i]] for i in range(6)]
        assert sum(runs) == 6 and max(runs) <= 4 and len(runs) < 6  # waiting requests shared runs

    asyncio.run(scenario())


def test_inline_a_failed_run_fails_its_batch_alone_and_the_next_batch_runs():
    async def scenario():
        model = Model()
        batcher = Batcher(model, max_rows=2, inline=True)
        bad = np.array([[np.nan]], np.float32)
        outcomes = await asyncio.gather(batcher(rows(1)), batcher(bad), batcher(rows(3)), return_exceptions=True)
        assert isinstance(outcomes[0], ValueError) and isinstance(outcomes[1], ValueError)  # one run of two
        assert outcomes[2].tolist() == [[6.0]]  # queued behind it: the next turn's run
        assert model.runs == [2, 1] and not batcher.pending

    asyncio.run(scenario())
