"""Where a photo is decoded: a small one inline in the event loop (a thread hop costs more than its
work), a large one in a worker thread (it must not hold up the worker's other requests). Either way
the tags are the same."""

from __future__ import annotations

import asyncio

import anyio.to_thread
import pytest

import service.tasks.image.adapter as image
from service.models.registry import Registry
from service.settings import Settings
from tests.conftest import REPO, SHARED_DATA

PHOTO = SHARED_DATA / "images" / "sample_photos" / "chelsea.png"  # 240 KB


@pytest.fixture(scope="module")
def tagger():
    return Registry(Settings(models_dir=REPO / "models")).get("image-tagging")


def test_a_photo_over_the_inline_size_is_tagged_in_a_thread_and_a_smaller_one_inline(tagger, monkeypatch):
    hops = []
    real = anyio.to_thread.run_sync

    async def counted(function, *args, **kwargs):
        hops.append(function)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
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
