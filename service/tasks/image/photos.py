"""Photo bytes -> the classifier's input tensor, as the model card says, with limits checked first.

Order matters for safety: the format and the pixel count come from the file header, so a
decompression bomb (a small file declaring a huge image) is refused before any pixel is decoded.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.cards import ImageInputCard
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType, field_error

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP")
# Our own limit (NNSERVE_MAX_IMAGE_PIXELS) is checked from the header; PIL's global one is turned off
# so that the check, and its message, happen in one place.
Image.MAX_IMAGE_PIXELS = None


def decode_photo(data: bytes, max_pixels: int, loc: list[str | int], shorter: int = 0) -> Image.Image:
    """Bytes -> an upright RGB image; raises a client error naming the field at `loc` otherwise.

    `shorter` > 0 (NNSERVE_FAST_JPEG_DECODE): a JPEG is decoded at the smallest of libjpeg's reduced scales
    (1/2, 1/4, 1/8, in the DCT) whose shorter side is still at least `shorter` pixels, instead of whole and
    then shrunk by the resize: a 12-megapixel photo for a 224-pixel model decodes several times faster, and
    the pixels the model sees differ slightly (docs/performance.md has the figures)."""
    if not data:
        raise InvalidInput("empty photo", [field_error(loc, "a JPEG, PNG or WebP file", "0 bytes", "empty")])
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        head = data[:8].hex()
        raise UnsupportedMediaType(
            "not an image", [field_error(loc, "a JPEG, PNG or WebP file", f"bytes starting {head}", "not_image")]
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # a recognised format with a broken header
        raise InvalidInput(
            "corrupt image header",
            [field_error(loc, "a complete image file", f"{len(data)} bytes: {e}", "corrupt_image")],
        ) from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"unsupported image format {image.format}",
            [field_error(loc, "a JPEG, PNG or WebP file", image.format, "unsupported_format")],
        )
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            "image has too many pixels",
            [field_error(loc, f"at most {max_pixels} pixels", f"{width}x{height} = {width * height}", "too_big")],
        )
    if shorter and image.format == "JPEG" and min(width, height) >= 2 * shorter:
        scale = shorter / min(width, height)  # the decoder keeps both sides at least the size asked for
        image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            return _to_rgb(_upright(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise InvalidInput(
            "corrupt or truncated image",
            [field_error(loc, f"a complete {image.format} file", f"{len(data)} bytes: {e}", "corrupt_image")],
        ) from None


# EXIF orientation -> the transposition that shows the photo upright (as ImageOps.exif_transpose).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}  # fmt: skip


def _upright(image: Image.Image) -> Image.Image:
    """Phones store rotation in EXIF, not in the pixels. Only the orientation is read: ImageOps'
    exif_transpose also rewrites the EXIF, which raised TypeError and struct.error (500s) on corrupt
    EXIF values that fuzzed photos carried, and copies an image it does not turn."""
    try:
        orientation = image.getexif().get(0x0112)  # EXIF's Orientation tag
    except Exception:  # any parse failure of an optional block of client bytes: the pixels as stored
        return image
    method = UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Palette, grey, 16-bit, CMYK and alpha images become 8-bit RGB; transparency is laid on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float32)
        scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
        image = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def to_input(image: Image.Image, spec: ImageInputCard) -> np.ndarray:
    """Resize the shorter side to `resize_shorter`, centre-crop to `size`, lay out and scale as the card
    says. Returns one row: [1, H, W, 3] or [1, 3, H, W]."""
    height, width = spec.size
    w, h = image.size
    scale = spec.resize_shorter / min(w, h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)
    if spec.normalise_in_graph:  # the graph takes raw 0..255 pixel values
        tensor = pixels.transpose(2, 0, 1) if spec.layout == "NCHW" else pixels
        return np.ascontiguousarray(tensor[None], dtype=spec.dtype)
    return _normalised(pixels, spec)[None].astype(spec.dtype, copy=False)


def _normalised(pixels: np.ndarray, spec: ImageInputCard) -> np.ndarray:
    """(pixels / 255 - mean) / std in the card's layout, as one multiply and one add per value, along
    axes long enough for numpy to run fast (a channel plane; a row of W x 3 values): 0.1 ms for a 224 px
    photo where the same sums broadcast over the last axis of 3 took 0.86 ms. Within 1e-6 of them."""
    height, width, _ = pixels.shape
    std = np.asarray(spec.std, np.float32)
    scale, offset = 1 / (np.float32(255) * std), -np.asarray(spec.mean, np.float32) / std
    if spec.layout == "NCHW":
        source, scale, offset = pixels.transpose(2, 0, 1), scale[:, None, None], offset[:, None, None]
    else:
        source, scale, offset = pixels.reshape(height, width * 3), np.tile(scale, width), np.tile(offset, width)
    out = np.empty(source.shape, np.float32)
    np.multiply(source, scale, out=out)
    out += offset
    return out.reshape(source.shape if spec.layout == "NCHW" else pixels.shape)


def probabilities(scores: np.ndarray, output_is: str) -> np.ndarray:
    """Rows of class scores [N, classes] as probabilities (float64): logits through a softmax."""
    scores = scores.astype(np.float64)
    if output_is == "logits":
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def top_k(scores: np.ndarray, labels: list[str], k: int, output_is: str) -> list[tuple[str, float]]:
    """The k best (label, probability) pairs of one row of scores."""
    scores = probabilities(scores, output_is)
    k = min(k, len(labels))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(labels[i], float(scores[i])) for i in best]
