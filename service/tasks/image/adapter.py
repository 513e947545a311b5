"""Image classification: a photo in, labels with scores out, for any classifier brought as an ONNX file
with its labels (training/make_card.py).

The graph takes one 4-D image tensor as the card's `image` section says (size, layout, dtype,
normalisation) and returns class scores [N, labels]. Every classifier answers on the same routes,
/v1/image-tagging/..., chosen by the request's `model` (default: image-tagging, or the only one):
photos as multipart files or as base64 in JSON, one or a batch. Decoding and resizing happen inline
for small photos (INLINE_PHOTO_BYTES), in a worker thread for larger ones; on a GPU concurrent
requests share padded batches (service/tasks/batching.py).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from service.errors import InvalidInput, field_error
from service.protocol.bodies import (
    JSON,
    MULTIPART,
    Form,
    check_media_type,
    parse_form,
    parse_json,
    read_body,
    received_value,
)
from service.protocol.transport import json_bytes, send_bytes
from service.tasks.base import Adapter, Endpoint, answered_by
from service.tasks.batching import Batcher
from service.tasks.image.photos import decode_photo, probabilities, to_input, top_k
from service.tasks.image.types import Base64Photo, PhotoOptions, Tags, TagsBatch, base64_batch
from service.telemetry import batch_size_observer

ROUTE = "/v1/image-tagging"
# Photos of at most this many bytes in all are decoded and run inline in the event loop, larger ones in
# a worker thread. The thread hop costs more than a small photo's work: one 224 px JPEG (15 KB) per
# request, inline vs thread, 480 vs 404 photos/s and 4.1 vs 4.8 CPU-s per 1,000 (make bench, same
# run against KServe); the loop is held ~4 ms. A phone photo (megabytes, tens of ms) keeps the thread,
# so it never holds up the worker's other requests and probes.
INLINE_PHOTO_BYTES = 64 * 1024
DEFAULT = "image-tagging"
DEFAULT_TOP_K = 5  # tags returned when a request does not say (every label, for a model with fewer)
Photo = tuple[bytes, list[str | int]]  # the file, and where it was in the request (for errors)


class ImageClassification(Adapter):
    task = "image_classification"
    heavy = True  # decoding a large photo and running a CNN take milliseconds: a thread, not the event loop

    def check(self) -> None:
        card = self.model.card
        if card.image is None or not card.labels:
            raise self.fail("an image classifier's card needs `image` (its preprocessing) and `labels`")
        h, w = card.image.size
        want = [h, w, 3] if card.image.layout == "NHWC" else [3, h, w]
        (tensor,) = card.inputs if len(card.inputs) == 1 else (None,)
        if tensor is None or tensor.shape[1:] != want or tensor.dtype != card.image.dtype:
            raise self.fail(f"the card's image section says {card.image.dtype} [N, {want}]; the graph takes "
                            f"{[(t.name, t.dtype, t.shape) for t in card.inputs]}")  # fmt: skip
        if len(card.outputs) != 1 or card.outputs[0].shape[-1] != len(card.labels):
            raise self.fail(f"{len(card.labels)} labels, but the graph's output is {card.outputs[0].shape}")

    def make_batcher(self) -> Batcher | None:
        """A GPU gets batches of up to 32 photos, a 2 ms wait to fill them, and batches padded to a few
        sizes, warmed up now. The CPU gets none by default: there a batch of 32 CIFAR photos runs only
        14% more photos/s than batch 1 (2,497 vs 2,181 on this project's 2-core machine), less than the
        extra thread hop costs."""
        gpu, settings = self.model.on_gpu, self.settings
        max_rows = settings.dynamic_batch_max or (32 if gpu else 1)
        if max_rows == 1:
            return None
        wait_ms = settings.dynamic_batch_wait_ms if settings.dynamic_batch_wait_ms >= 0 else (2.0 if gpu else 0.0)
        batcher = Batcher(self.model.run, max_rows, wait_ms / 1000, pad=gpu, observe=batch_size_observer(self.name))
        self.model.warm_up(batcher.buckets)
        return batcher

    def tags_wanted(self, k: int | None) -> int:
        """The tags to return: as asked, or DEFAULT_TOP_K (every label, for a model with fewer). Only an
        explicit top_k can be too large."""
        labels = len(self.model.card.labels)
        if k is None:
            return min(DEFAULT_TOP_K, labels)
        if k > labels:
            raise InvalidInput(
                "top_k is larger than the number of labels",
                [field_error(["top_k"], f"1 to {len(self.model.card.labels)} for {self.name}", received_value(k),
                             "less_than_equal")],
            )  # fmt: skip
        return k

    async def tag(self, photos: list[Photo], k: int) -> list[list[dict[str, Any]]]:
        """Photos -> their top-k tags, best first (k checked by `tags_wanted` first)."""
        card, max_pixels = self.model.card, self.settings.max_image_pixels
        assert card.image is not None

        def prepare() -> tuple[np.ndarray]:
            rows = [to_input(decode_photo(data, max_pixels, loc), card.image) for data, loc in photos]
            return (np.concatenate(rows),)

        scores = await self.run(prepare, heavy=sum(len(data) for data, _ in photos) > INLINE_PHOTO_BYTES)
        return [
            [{"label": label, "score": score} for label, score in top_k(row, card.labels, k, card.image.output_is)]
            for row in scores
        ]

    def smoke(self) -> None:
        """A grey photo must give finite scores (the load's warm-up ran the graph on zeros already)."""
        grey = np.full((1, *self.model.card.inputs[0].shape[1:]), 128, dtype=self.model.card.inputs[0].dtype)
        scores = self.model.run(grey)
        if not np.all(np.isfinite(scores)):
            raise self.fail("smoke prediction on a grey photo gave scores that are not finite")

    def differences(self, live: list[list[dict]], shadow: list[list[dict]]) -> tuple[str, list[float]]:
        return "top1_agreement", [float(a[0]["label"] == b[0]["label"]) for a, b in zip(live, shadow, strict=True)]

    def drift_names(self) -> list[str]:
        return ["top1_confidence", "predicted_class"]

    def drift_columns(self, parts: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        assert self.model.card.image is not None
        p = probabilities(parts[0], self.model.card.image.output_is)
        return [p.max(axis=1), p.argmax(axis=1)]

    def describe(self) -> dict[str, Any]:
        image = self.model.card.image
        assert image is not None
        h, w = image.size
        note = (f"decoded RGB pixels as the graph takes them: {image.dtype} {image.layout} {h}x{w}"
                + ("" if image.normalise_in_graph else ", normalised with the card's mean and std")
                + f"; photo files go to POST {ROUTE}/predict")  # fmt: skip
        return {**super().describe(), "labels": self.model.card.labels, "input_note": note}


def _b64(text: str, loc: list[str | int]) -> bytes:
    """Base64 as clients write it: standard or URL-safe, with line breaks (MIME), without padding,
    or as a browser's data URL (data:image/jpeg;base64,...); anything else is a 400."""
    if text.startswith("data:") and ";base64," in text[:100]:
        text = text.split(",", 1)[1]
    text = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "not valid base64", [field_error(loc, "a base64-encoded photo file", text[:40], "base64")]
        ) from None


def endpoints(registry: Any, max_images: int, max_body: int) -> list[Endpoint]:
    """The four photo routes, shared by every classifier loaded: multipart files or base64 in JSON,
    one photo or a batch. The registry finds the model named (or answers that it is not loaded, 404,
    or failed to load, 503) and the version that answers (pinned in the path, or the canary's draw)."""

    def choose(scope: dict, name: str | None) -> ImageClassification:
        names = sorted(n for n, a in registry.adapters.items() if isinstance(a, ImageClassification))
        if name is None:
            name = DEFAULT if DEFAULT in names or len(names) != 1 else names[0]
        chosen, shadow = registry.route(name, scope.get("nnserve.version"), scope)
        if not isinstance(chosen, ImageClassification):
            raise InvalidInput(f"model {name} is not an image classifier",
                               [field_error(["model"], f"one of {names}", name, "not_a_classifier")])  # fmt: skip
        scope["nnserve.shadow"] = shadow if isinstance(shadow, ImageClassification) else None
        answered_by(scope, chosen)
        return chosen

    Decode = Callable[[dict, Any], Awaitable[tuple[list[Photo], Any]]]  # -> photos, and top_k and model

    def route(path: str, name: str, summary: str, batch: bool, decode: Decode, **body: Any) -> Endpoint:
        async def handler(scope: dict, receive: Any, send: Any) -> None:
            photos, options = await decode(scope, receive)
            chosen = choose(scope, options.model)
            k = chosen.tags_wanted(options.top_k if "top_k" in options.model_fields_set else None)
            results = await chosen.tag(photos, k)
            served = {"model": chosen.name, "version": chosen.model.card.version}
            answer = {**served, "results": results} if batch else {**served, "tags": results[0]}
            await send_bytes(send, 200, json_bytes(answer))
            chosen.shadow(scope, lambda candidate: candidate.tag(photos, 1), results)
            sizes = [len(data) for data, _ in photos]  # the photos' sizes, not their pixels
            top1 = [tags[0]["label"] for tags in results]
            chosen.log_payload(scope, {"photo_bytes": sizes, "top_k": k}, answer, top1)

        return Endpoint(path, name, summary, TagsBatch if batch else Tags, handler, **body)

    def files(form: Form) -> Decode:
        async def decode(scope: dict, receive: Any) -> tuple[list[Photo], Any]:
            content_type = check_media_type(scope, MULTIPART)
            photos, options = parse_form(await read_body(scope, receive, max_body), content_type, form)
            return [(data, [form.file, i] if form.many else [form.file]) for i, data in enumerate(photos)], options

        return decode

    def base64_json(model: type, field: str, batch: bool) -> Decode:
        async def decode(scope: dict, receive: Any) -> tuple[list[Photo], Any]:
            check_media_type(scope, JSON)
            request = parse_json(await read_body(scope, receive, max_body), model)
            texts = getattr(request, field) if batch else [getattr(request, field)]
            locs = [[field, i] if batch else [field] for i in range(len(texts))]
            return [(_b64(text, loc), loc) for text, loc in zip(texts, locs, strict=True)], request

        return decode

    one = Form("photo", "The photo file: JPEG, PNG or WebP, any size.", PhotoOptions)
    many = Form("photos", "Photo files (JPEG, PNG or WebP), repeated `photos` parts.", PhotoOptions, True, max_images)
    batch64 = base64_batch(max_images)
    return [
        route(f"{ROUTE}/predict", "image_tagging", "Tag one photo uploaded as a multipart file.", False,
              files(one), form=one),
        route(f"{ROUTE}/predict-batch", "image_tagging_batch",
              "Tag a batch of photos uploaded as multipart files named `photos`.", True, files(many), form=many),
        route(f"{ROUTE}/predict-base64", "image_tagging_base64", "Tag one photo sent as base64 in JSON.", False,
              base64_json(Base64Photo, "image_base64", False), request=Base64Photo),
        route(f"{ROUTE}/predict-batch-base64", "image_tagging_batch_base64",
              "Tag a batch of photos sent as base64 in JSON.", True, base64_json(batch64, "images_base64", True),
              request=batch64),
    ]  # fmt: skip
