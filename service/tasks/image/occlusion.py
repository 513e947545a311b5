"""Where in a photo its top tag comes from, by occlusion (gradient-free, onnxruntime only): the model's
input is cut into a grid of cells; each cell in turn is covered with the input's mean colour, and the
fall of the top tag's probability is that cell's score. grid² + 1 images run in large batches.

The grid lives on the model's input (its resolution), which is a centre crop of the resized photo;
`crop_box` maps it back to the photo's pixels, and `heat_png` draws the map over the photo at its own
size, a picture a person reads at a glance.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from service.cards import ImageInputCard

CHUNK = 64  # occluded images per onnxruntime run


def cells(size: tuple[int, int], grid: int) -> list[tuple[int, int, int, int]]:
    """The grid's cells over an input of `size` (height, width), row by row: (top, bottom, left, right)."""
    h, w = size
    rows, cols = np.linspace(0, h, grid + 1).round().astype(int), np.linspace(0, w, grid + 1).round().astype(int)
    return [(rows[i], rows[i + 1], cols[j], cols[j + 1]) for i in range(grid) for j in range(grid)]


def occluded(tensor: np.ndarray, spec: ImageInputCard, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """The input [1, ...] once per box, that box covered with the input's mean colour: [len(boxes), ...]."""
    nchw = spec.layout == "NCHW"
    spatial = (2, 3) if nchw else (1, 2)
    mean = tensor.mean(axis=spatial, keepdims=True).astype(tensor.dtype)
    images = np.repeat(tensor, len(boxes), axis=0)
    for k, (top, bottom, left, right) in enumerate(boxes):
        if nchw:
            images[k, :, top:bottom, left:right] = mean[0]
        else:
            images[k, top:bottom, left:right, :] = mean[0, 0]
    return images


Scorer = Callable[[np.ndarray], np.ndarray]  # input images -> class probabilities


def occlusion_map(tensor: np.ndarray, spec: ImageInputCard, grid: int, probabilities_of: Scorer
                  ) -> tuple[int, float, np.ndarray, int]:  # fmt: skip
    """(top class, its probability, the grid of its falls [grid, grid], images run) for one input [1, ...]."""
    boxes = cells(spec.size, grid)
    images = np.concatenate([tensor, occluded(tensor, spec, boxes)])
    p = np.concatenate([probabilities_of(images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)])
    top = int(p[0].argmax())
    return top, float(p[0, top]), (p[0, top] - p[1:, top]).reshape(grid, grid), len(images)


def crop_box(photo_size: tuple[int, int], spec: ImageInputCard) -> tuple[float, float, float, float]:
    """The part of the photo (width, height) the model saw, in the photo's pixels: (left, top, right,
    bottom), as service/tasks/image/photos.py:to_input resizes and crops it."""
    height, width = spec.size
    w, h = photo_size
    scale = spec.resize_shorter / min(w, h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    left, top = (new_w - width) // 2, (new_h - height) // 2
    sx, sy = new_w / w, new_h / h
    return left / sx, top / sy, (left + width) / sx, (top + height) / sy


def heat_png(photo: Image.Image, grid: np.ndarray, box: tuple[float, float, float, float]) -> bytes:
    """The photo at its own size, the cells whose covering lowered the top tag most in red over it
    (opacity by the fall, the largest at 60%), the rest of the photo dimmed where the model did not look."""
    base = photo.convert("RGB")
    heat = np.clip(grid, 0, None)
    heat = heat / heat.max() if heat.max() > 0 else heat
    left, top, right, bottom = (round(v) for v in box)
    size = (max(1, right - left), max(1, bottom - top))
    alpha = Image.fromarray((heat * 153).astype(np.uint8), "L").resize(size, Image.Resampling.BILINEAR)
    mask = Image.new("L", base.size, 90)  # outside the crop: dimmed
    mask.paste(alpha, (left, top))
    colour = Image.new("RGB", base.size, (0, 0, 0))
    colour.paste(Image.new("RGB", size, (255, 32, 32)), (left, top))
    out = Image.composite(colour, base, mask)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue()
