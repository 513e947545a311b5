"""Image classification: a photo in, labels with scores out, for any classifier brought as an ONNX file
with its labels (training/make_card.py).

The graph takes one 4-D image tensor as the card's `image` section says (size, layout, dtype,
normalisation) and returns class scores [N, labels]. Every classifier answers the same actions under
one route name, GROUP, the request's `model` choosing which (default: image-tagging, or the only one):
photos as multipart files or as base64 in JSON, one or a batch. Decoding and resizing happen inline
for small photos (INLINE_PHOTO_BYTES), in a worker thread for larger ones; on a GPU concurrent
requests share padded batches (service/tasks/batching.py).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from functools import cache
from typing import Any

import anyio
import numpy as np

from service.errors import InvalidInput, field_error, received_value
from service.runtime import LoadedModel
from service.settings import Settings
from service.tasks.base import Action, Adapter, Form, Prediction
from service.tasks.batching import Batcher
from service.tasks.image.occlusion import crop_box, heat_png, occlusion_map
from service.tasks.image.photos import decode_photo, probabilities, to_input, top_k
from service.tasks.image.types import Base64Photo, PhotoExplanation, PhotoOptions, Tags, TagsBatch, base64_batch
from service.telemetry import batch_size_observer

# Photos of at most this many bytes in all are decoded and run inline in the event loop, larger ones in
# a worker thread. The thread hop costs more than a small photo's work: one 224 px JPEG (15 KB) per
# request, inline vs thread, 480 vs 404 photos/s and 4.1 vs 4.8 CPU-s per 1,000 (make bench, same
# run against KServe); the loop is held ~4 ms. A phone photo (megabytes, tens of ms) keeps the thread,
# so it never holds up the worker's other requests and probes.
INLINE_PHOTO_BYTES = 64 * 1024
CPU_PHOTO_BATCH = 8  # small photos in one inline run on the CPU, at most (make_batcher)
GROUP = "image-tagging"  # the route name every classifier shares; the model answering when none is named
DEFAULT_TOP_K = 5  # tags returned when a request does not say (every label, for a model with fewer)
Photo = tuple[bytes, list[str | int]]  # the file, and where it was in the request (for errors)
EXPLAIN = "Where in the photo its top tag comes from: an occlusion map, by cell of the model's input."


class ImageClassification(Adapter):
    task = "image_classification"
    heavy = True  # decoding a large photo and running a CNN take milliseconds: a thread, not the event loop
    group = GROUP
    noun = "an image classifier"
    action_names = ("predict", "predict-batch", "predict-base64", "predict-batch-base64", "explain", "explain-base64")

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
        return photo_batcher(self.model, self.settings, batch_size_observer(self.name))

    def actions(self) -> list[Action]:
        return actions(self.settings.max_batch_images)

    def batch_limit(self) -> tuple[int, str]:
        return self.settings.max_batch_images, "NNSERVE_MAX_BATCH_IMAGES"

    def tags_wanted(self, k: int | None) -> int:
        """The tags to return: as asked, or DEFAULT_TOP_K (every label, for a model with fewer). Only an
        explicit top_k can be too large."""
        labels = len(self.model.card.labels)
        if k is None:
            return min(DEFAULT_TOP_K, labels)
        if k > labels:
            raise InvalidInput(
                "top_k is larger than the number of labels",
                [field_error(["top_k"], f"1 to {labels} for {self.name}", received_value(k), "less_than_equal")],
            )
        return k

    async def predict(self, action: str, request: Any) -> Prediction:
        """`request`: (the files, the form's fields) for a multipart action; the validated JSON for base64."""
        if isinstance(request, tuple):
            files, options = request
            many = action == "predict-batch"
            photos = [(data, ["photos", i] if many else ["photo"]) for i, data in enumerate(files)]
        else:
            options, many = request, action == "predict-batch-base64"
            texts = request.images_base64 if many else [request.image_base64]
            locs = [["images_base64", i] if many else ["image_base64"] for i in range(len(texts))]
            photos = [(_b64(text, loc), loc) for text, loc in zip(texts, locs, strict=True)]
        k = self.tags_wanted(options.top_k if "top_k" in options.model_fields_set else None)
        results, parts = await self.compute((photos, k))
        served = {"model": self.name, "version": self.version}
        answer = {**served, "results": results} if many else {**served, "tags": results[0]}
        logged = {"photo_bytes": [len(data) for data, _ in photos], "top_k": k}  # the photos' sizes, not their pixels
        return Prediction(answer, logged, [tags[0]["label"] for tags in results], parts, (photos, 1), results)

    async def explain(self, action: str, request: Any, picture: bool = False) -> dict[str, Any] | bytes:
        """An occlusion map of the top tag (service/tasks/image/occlusion.py), as JSON, or when `picture` as a
        PNG of the photo with the map over it; decoding and the grid² + 1 runs in a thread."""
        if isinstance(request, tuple):
            data, loc = request[0][0], ["photo"]
        else:
            data, loc = _b64(request.image_base64, ["image_base64"]), ["image_base64"]
        card, grid = self.model.card, self.settings.explain_grid
        spec = card.image
        assert spec is not None

        def work() -> dict[str, Any] | bytes:
            photo = decode_photo(data, self.settings.max_image_pixels, loc)
            run = lambda images: probabilities(self.model.run(images), spec.output_is)  # noqa: E731
            top, score, falls, runs = occlusion_map(to_input(photo, spec), spec, grid, run)
            box = crop_box(photo.size, spec)
            if picture:
                return heat_png(photo, falls, box)
            h, w = spec.size
            return {"model": self.name, "version": self.version, "label": card.labels[top], "score": score,
                    "grid": np.round(falls, 6).tolist(), "box": [round(v, 1) for v in box],
                    "photo_size": list(photo.size), "rows_run": runs,
                    "method": f"occlusion: {grid}x{grid} cells of the model's {h}x{w} input, each covered in turn "
                              "with the input's mean colour (NNSERVE_EXPLAIN_GRID)"}  # fmt: skip

        return await anyio.to_thread.run_sync(work)

    def explanations(self) -> dict[str, Any] | None:
        grid = self.settings.explain_grid
        return {"method": f"occlusion, {grid}x{grid} cells of the model's input", "images": grid * grid + 1,
                "routes": ["explain", "explain-base64"]}  # fmt: skip

    async def compute(self, inputs: tuple[list[Photo], int]) -> tuple[Any, tuple[np.ndarray, ...]]:
        """Photos -> their top-k tags, best first (k checked by `tags_wanted` first), and drift's parts."""
        photos, k = inputs
        card, max_pixels = self.model.card, self.settings.max_image_pixels
        assert card.image is not None
        shorter = card.image.resize_shorter if self.settings.fast_jpeg_decode else 0

        def prepare() -> tuple[np.ndarray]:
            rows = [to_input(decode_photo(data, max_pixels, loc, shorter), card.image) for data, loc in photos]
            return (np.concatenate(rows),)

        _, scores = await self.run(prepare, heavy=sum(len(data) for data, _ in photos) > INLINE_PHOTO_BYTES)
        tags = [[{"label": label, "score": score} for label, score in top_k(row, card.labels, k, card.image.output_is)]
                for row in scores]  # fmt: skip
        return tags, (scores,)

    def smoke(self) -> None:
        """A grey photo must give finite scores (the load's warm-up ran the graph on zeros already)."""
        grey = np.full((1, *self.model.card.inputs[0].shape[1:]), 128, dtype=self.model.card.inputs[0].dtype)
        scores = self.model.run(grey)
        if not np.all(np.isfinite(scores)):
            raise self.fail("smoke prediction on a grey photo gave scores that are not finite")

    def differences(self, live: list[list[dict]], shadow: list[list[dict]]) -> tuple[str, list[float]]:
        return "top1_agreement", [float(a[0]["label"] == b[0]["label"]) for a, b in zip(live, shadow, strict=True)]

    def check_outcome(self, outcome: Any, loc: list[str | int]) -> None:
        if not (isinstance(outcome, str) and outcome in self.model.card.labels):
            expected = "one of the model's labels"
            raise InvalidInput(f"{loc[0]}: expected {expected}", [field_error(loc, expected, outcome, "outcome")])

    def measures(self, outputs: list[Any], outcomes: list[Any]) -> dict[str, float | int | None]:
        return {"rows": len(outputs), "top1": float(np.mean([p == o for p, o in zip(outputs, outcomes, strict=True)]))}

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
                + f"; photo files go to POST /v1/{GROUP}/predict")  # fmt: skip
        return {**super().describe(), "labels": self.model.card.labels, "input_note": note}


def photo_batcher(model: LoadedModel, settings: Settings, observe: Callable[[int], None]) -> Batcher | None:
    """How an image model's small photos (the inline ones) reach it; large photos keep their thread,
    unbatched, whatever this says. Measured each way, then chosen:

    - CPU: the photos that queued while the worker was busy share one run in the event loop, up to 8,
      never waiting for more: no thread hop, and under load batches form by themselves. make bench, 5
      alternating rounds, against one photo a run: CIFAR tagger 584 -> 675 photos/s, 3.32 -> 2.88 CPU-s
      per 1,000, p99 38 -> 31 ms; a 224 px ImageNet CNN 300 -> 301 photos/s, the same CPU.
    - GPU: one photo a run, in the event loop. On an H200 (loadtests/gpu_serve.py: bentoml serve, 2
      workers, 64 clients; loadtests/RESULTS.md), the same run: a batcher in a thread (up to 32, 2 ms
      to fill), the default until then, served 372 CIFAR photos/s and 516 224 px ones, less than the
      CPU provider (848, 490): the busy loop held the GIL while each run's thread waited for it. One
      photo a run in the loop served 1,521 and 900. A batcher in the loop (up to 32, padded) served
      188-227 and 355-489 in two later runs, for a cause not found in the device time left. Nothing is
      padded then: a batch request of a size not seen before pays cuDNN's search once (docs/operations.md).

    NNSERVE_DYNAMIC_BATCH_MAX, or a wait, set: a batcher in a thread for every photo (on a GPU padded to
    warmed-up sizes and waiting 2 ms unless told); NNSERVE_DYNAMIC_BATCH_MAX=1: none, on the CPU too."""
    gpu = model.on_gpu
    if not settings.dynamic_batch_max and settings.dynamic_batch_wait_ms <= 0:
        return None if gpu else Batcher(model.run, CPU_PHOTO_BATCH, observe=observe, inline=True)
    max_rows = settings.dynamic_batch_max or (32 if gpu else 1)
    if max_rows == 1:
        return None
    wait_ms = settings.dynamic_batch_wait_ms if settings.dynamic_batch_wait_ms >= 0 else (2.0 if gpu else 0.0)
    batcher = Batcher(model.run, max_rows, wait_ms / 1000, pad=gpu, observe=observe)
    model.warm_up(batcher.buckets)
    return batcher


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


@cache
def actions(max_images: int) -> list[Action]:
    """The four actions every classifier answers: multipart files or base64 in JSON, one photo or a batch."""
    one = Form("photo", "The photo file: JPEG, PNG or WebP, any size.", PhotoOptions)
    many = Form("photos", "Photo files (JPEG, PNG or WebP), repeated `photos` parts.", PhotoOptions, True, max_images)
    return [
        Action("predict", "image_tagging", "Tag one photo uploaded as a multipart file.", Tags, form=one),
        Action("predict-batch", "image_tagging_batch", "Tag a batch of photos uploaded as multipart files named "
               "`photos`.", TagsBatch, form=many),
        Action("predict-base64", "image_tagging_base64", "Tag one photo sent as base64 in JSON.", Tags,
               request=Base64Photo),
        Action("predict-batch-base64", "image_tagging_batch_base64", "Tag a batch of photos sent as base64 in JSON.",
               TagsBatch, request=base64_batch(max_images)),
        Action("explain", "image_tagging_explain", f"{EXPLAIN} Multipart, one `photo`; `Accept: image/png` for the "
               "photo with the map over it.", PhotoExplanation, form=one, verb="explain", picture=True),
        Action("explain-base64", "image_tagging_explain_base64", f"{EXPLAIN} Base64 in JSON; `Accept: image/png` "
               "for the photo with the map over it.", PhotoExplanation, request=Base64Photo, verb="explain",
               picture=True),
    ]  # fmt: skip
