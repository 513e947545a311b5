"""Where a photo is decoded: a small one inline in the event loop (a thread hop costs more than its
work), a large one in a worker thread (it must not hold up the worker's other requests). Either way
the tags are the same. Small photos waiting together share one run on the CPU."""

from __future__ import annotations

import asyncio
import io

import anyio.to_thread
import pytest
from PIL import Image

import service.tasks.image.adapter as image
from service.models.registry import Registry
from service.settings import Settings
from tests.conftest import REPO, SHARED_DATA

PHOTO = SHARED_DATA / "images" / "sample_photos" / "chelsea.png"  # 240 KB


@pytest.fixture(scope="module")
def tagger():
    return Registry(Settings(models_dir=REPO / "models")).get("image-tagging")


def _thread_hops(monkeypatch) -> list:
    """Every function sent to a worker thread from now on (anyio.to_thread.run_sync), in order."""
    hops = []
    real = anyio.to_thread.run_sync

    async def counted(function, *args, **kwargs):
        hops.append(function)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return hops


def test_a_photo_over_the_inline_size_is_tagged_in_a_thread_and_a_smaller_one_inline(tagger, monkeypatch):
    hops = _thread_hops(monkeypatch)
    photo = PHOTO.read_bytes()
    assert len(photo) > image.INLINE_PHOTO_BYTES
    threaded, _ = asyncio.run(tagger.compute(([(photo, ["photo"])], 3)))
    assert len(hops) == 1

    monkeypatch.setattr(image, "INLINE_PHOTO_BYTES", len(photo))  # the same photo is now small enough
    inline, _ = asyncio.run(tagger.compute(([(photo, ["photo"])], 3)))
    assert len(hops) == 1 and inline == threaded and len(inline[0]) == 3


def test_an_inline_photo_waits_one_turn_of_the_loop_so_what_came_before_it_runs_first(tagger, monkeypatch):
    """Run in the step that read it, a photo's milliseconds went ahead of everything already waiting in
    the loop (p99 of 224 px photos 2-3x higher on one worker: Adapter.run's docstring)."""
    photo = PHOTO.read_bytes()
    monkeypatch.setattr(image, "INLINE_PHOTO_BYTES", len(photo))
    order = []

    async def main():
        loop = asyncio.get_running_loop()
        tagging = asyncio.ensure_future(tagger.compute(([(photo, ["photo"])], 3)))
        loop.call_soon(order.append, "waiting before")  # queued after the photo's first step
        await asyncio.sleep(0)  # the photo's first step runs, then the callback
        order.append("photo started" if not tagging.done() else "photo done")
        await tagging
        return tagging.result()

    tags, _ = asyncio.run(main())
    assert order == ["waiting before", "photo started"] and len(tags[0]) == 3


def _small_photos(n: int) -> list[bytes]:
    """n different small photos (crops of the sample, a few KB of PNG each): the inline kind."""
    with Image.open(PHOTO) as full:
        photos = []
        for i in range(n):
            out = io.BytesIO()
            full.convert("RGB").crop((10 * i, 0, 10 * i + 96, 96)).save(out, "PNG")
            photos.append(out.getvalue())
    assert all(len(p) <= image.INLINE_PHOTO_BYTES for p in photos)
    return photos


def test_small_photos_that_queue_together_share_one_run_on_the_cpu_and_a_large_one_runs_alone(tagger, monkeypatch):
    """The CPU's default batcher (ImageClassification.make_batcher): light photos waiting in the same turn
    of the loop run as one batch, each request getting its own tags; a large photo keeps its thread,
    unbatched."""
    assert tagger.batcher is not None and tagger.batcher.inline and tagger.batcher.max_rows == image.CPU_PHOTO_BATCH
    photos = _small_photos(5)
    alone = [asyncio.run(tagger.compute(([(p, ["photo"])], 3)))[0] for p in photos]
    batches = []
    real = tagger.batcher.run
    monkeypatch.setattr(tagger.batcher, "run", lambda *arrays: batches.append(len(arrays[0])) or real(*arrays))

    async def together():
        return await asyncio.gather(*(tagger.compute(([(p, ["photo"])], 3)) for p in photos))

    shared = [tags for tags, _ in asyncio.run(together())]
    assert batches == [5]
    for mine, own in zip(shared, alone, strict=True):
        assert [t["label"] for t in mine[0]] == [t["label"] for t in own[0]]
        assert [t["score"] for t in mine[0]] == pytest.approx([t["score"] for t in own[0]], abs=1e-5)

    asyncio.run(tagger.compute(([(PHOTO.read_bytes(), ["photo"])], 3)))  # 240 KB: its thread, not the batcher
    assert batches == [5]


def test_with_batching_off_photos_run_one_by_one(monkeypatch):
    tagger = Registry(Settings(models_dir=REPO / "models", dynamic_batch_max=1)).get("image-tagging")
    assert tagger.batcher is None
    runs = []
    real = tagger.model.run
    monkeypatch.setattr(tagger.model, "run", lambda *arrays: runs.append(len(arrays[0])) or real(*arrays))

    async def together():
        return await asyncio.gather(*(tagger.compute(([(p, ["photo"])], 3)) for p in _small_photos(3)))

    asyncio.run(together())
    assert runs == [1, 1, 1]


def _on_a_gpu(monkeypatch, **settings):
    """The tagger as if its session were on a GPU (the batcher chosen depends only on the device the
    model reports; the session stays the CPU's), its new batcher, and the batch size of every run."""
    tagger = Registry(Settings(models_dir=REPO / "models", **settings)).get("image-tagging")
    monkeypatch.setattr(tagger.model, "device", "cuda:0")
    runs: list[int] = []
    real = tagger.model.run
    monkeypatch.setattr(tagger.model, "run", lambda *arrays: runs.append(len(arrays[0])) or real(*arrays))
    tagger.batcher = tagger.make_batcher()
    return tagger, runs


def test_on_a_gpu_each_small_photo_runs_alone_in_the_event_loop(monkeypatch):
    """A GPU's default (image.photo_batcher's docstring: a batcher in a thread waited for the GIL behind
    the busy loop): no batcher, each small photo's run in the loop, no thread hop."""
    tagger, runs = _on_a_gpu(monkeypatch)
    assert tagger.batcher is None and runs == []
    hops = _thread_hops(monkeypatch)

    async def together():
        return await asyncio.gather(*(tagger.compute(([(p, ["photo"])], 3)) for p in _small_photos(3)))

    asyncio.run(together())
    assert runs == [1, 1, 1] and hops == []


@pytest.mark.parametrize("asked", [{"dynamic_batch_wait_ms": 2}, {"dynamic_batch_max": 32}])
def test_on_a_gpu_a_wait_or_a_size_asks_for_a_padded_batcher_in_a_thread(monkeypatch, asked):
    tagger, runs = _on_a_gpu(monkeypatch, **asked)
    batcher = tagger.batcher
    assert batcher is not None and not batcher.inline and batcher.max_rows == 32 and batcher.max_wait_s == 0.002
    assert runs == batcher.buckets == [1, 2, 4, 8, 16, 32]  # each padded size warmed up when it is made
    photos, runs[:] = _small_photos(5), []

    async def together():
        return await asyncio.gather(*(tagger.compute(([(p, ["photo"])], 3)) for p in photos))

    shared = [tags for tags, _ in asyncio.run(together())]
    assert runs == [8]  # 5 photos, padded to 8, in one run
    alone = [asyncio.run(tagger.compute(([(p, ["photo"])], 3)))[0] for p in photos]
    for mine, own in zip(shared, alone, strict=True):
        assert [t["label"] for t in mine[0]] == [t["label"] for t in own[0]]
        assert [t["score"] for t in mine[0]] == pytest.approx([t["score"] for t in own[0]], abs=1e-5)
