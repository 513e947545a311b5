"""What NNSERVE_FAST_JPEG_DECODE does to speed and scores (docs/performance.md, "Fast JPEG decode").

    .venv/bin/python -m loadtests.fast_jpeg

Each sample photo (../shared/data/images/sample_photos), as a JPEG (quality 90) at its own size and
enlarged 4x and 8x (LANCZOS: camera-sized files, though smoother than a camera's), is decoded and prepared
for two models, whole and at libjpeg's reduced scale: the time of each (best of 7, one core), how far apart
the model's inputs are, and for the CIFAR tagger (the one with meaningful scores) how far apart its scores are.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from loadtests.bench import imagenet_models_dir
from loadtests.paths import MODELS, SAMPLE_PHOTOS
from service.runtime import LoadedModel, load_model
from service.tasks.image.photos import decode_photo, probabilities, to_input


def best_ms(work: Callable[[], object], times: int = 7) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        work()
        spent.append(time.perf_counter() - start)
    return min(spent) * 1000


def as_jpeg(image: Image.Image, scale: int) -> tuple[bytes, tuple[int, int]]:
    image = image.convert("RGB")
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue(), image.size


def compare(model: LoadedModel, data: bytes, scored: bool) -> str:
    """The photo decoded whole and at a reduced scale, for this model: times, inputs and scores."""
    spec = model.card.image
    assert spec is not None
    whole = lambda: to_input(decode_photo(data, 10**9, ["photo"]), spec)  # noqa: E731
    fast = lambda: to_input(decode_photo(data, 10**9, ["photo"], spec.resize_shorter), spec)  # noqa: E731
    x, y = whole(), fast()
    apart = np.abs(x.astype(np.float64) - y).mean()  # (a uint8 input would wrap around)
    line = f"{best_ms(whole):.1f} -> {best_ms(fast):.1f} ms; input mean |difference| {apart:.4f}"
    if scored:
        a, b = (probabilities(model.run(t), spec.output_is)[0] for t in (x, y))
        top_a, top_b = np.argsort(-a)[:5], np.argsort(-b)[:5]
        label = model.card.labels[top_a[0]]
        line += (f"; top-1 {'same' if top_a[0] == top_b[0] else 'DIFFERENT'} ({label} {a[top_a[0]]:.4f} -> "
                 f"{b[top_a[0]]:.4f}), top-5 shared {len(set(top_a) & set(top_b))}/5, "
                 f"largest score change {np.abs(a - b).max():.4f}")  # fmt: skip
    return line


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        imagenet = imagenet_models_dir(Path(tmp))
        for folder in [MODELS / "image-tagging", next(p for p in imagenet.iterdir() if (p / "card.json").exists())]:
            model = load_model(folder)
            assert model.card.image is not None
            print(f"== {folder.name}: input {model.card.image.size}, shorter side to {model.card.image.resize_shorter}")
            for photo in sorted(SAMPLE_PHOTOS.iterdir()):
                for scale in (1, 4, 8):
                    data, (w, h) = as_jpeg(Image.open(photo), scale)
                    print(f"{photo.stem} x{scale} {w}x{h}: {compare(model, data, folder.name == 'image-tagging')}")


if __name__ == "__main__":
    main()
