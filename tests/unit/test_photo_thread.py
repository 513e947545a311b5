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
