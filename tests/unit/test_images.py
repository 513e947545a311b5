"""Photo decoding and preprocessing: formats, modes, EXIF rotation, limits, resize and crop."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

from loadtests.photos import encode, png_bomb
from service.cards import ImageInputCard
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.tasks.image.photos import decode_photo, to_input, top_k

LOC = ["photo"]
CIFAR = ImageInputCard(size=(32, 32), resize_shorter=32, layout="NHWC", dtype="uint8", normalise_in_graph=True,
                       mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), output_is="probabilities")  # fmt: skip
IMAGENET = ImageInputCard(size=(224, 224), resize_shorter=256, layout="NCHW", dtype="float32", normalise_in_graph=False,
                          mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), output_is="logits")  # fmt: skip


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new(mode, (20, 10))
    fmt = "JPEG" if mode in ("CMYK", "L", "RGB") else "PNG"
    if mode == "1":
        fmt = "PNG"
    decoded = decode_photo(encode(image, fmt), 10_000, LOC)
    assert decoded.mode == "RGB" and decoded.size == (20, 10)


def test_transparency_is_laid_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_photo(encode(image, "PNG"), 100, LOC).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grey_is_scaled_to_8_bit():
    image = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert decode_photo(encode(image, "PNG"), 100, LOC).getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    assert decode_photo(encode(image, "JPEG", exif=exif), 10_000, LOC).size == (20, 40)


def test_limits_and_bad_files():
    with pytest.raises(PayloadTooLarge):
        decode_photo(png_bomb(), 40_000_000, LOC)
    with pytest.raises(PayloadTooLarge):
        decode_photo(encode(Image.new("RGB", (101, 100)), "PNG"), 10_000, LOC)
    with pytest.raises(UnsupportedMediaType):
        decode_photo(encode(Image.new("RGB", (4, 4)), "GIF"), 10_000, LOC)
    with pytest.raises(UnsupportedMediaType):
        decode_photo(b"just some text", 10_000, LOC)
    with pytest.raises(InvalidInput):
        decode_photo(encode(Image.new("RGB", (4, 4)), "PNG")[:20], 10_000, LOC)  # PNG signature, header cut
    with pytest.raises(UnsupportedMediaType):
        decode_photo(encode(Image.new("RGB", (4, 4)), "BMP"), 10_000, LOC)
    jpeg = encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")
    with pytest.raises(InvalidInput) as e:
        decode_photo(jpeg[:-200], 10_000, ["photos", 3])
    assert e.value.detail[0]["loc"] == ["photos", 3]


@pytest.mark.parametrize("size", [(1, 1), (1, 500), (500, 1), (33, 32), (640, 480)])
def test_any_shape_becomes_the_model_input(size):
    image = Image.new("RGB", size, (10, 20, 30))
    x = to_input(image, CIFAR)
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.uint8 and (x[0, 16, 16] == (10, 20, 30)).all()
    y = to_input(image, IMAGENET)
    assert y.shape == (1, 3, 224, 224) and y.dtype == np.float32
    assert y[0, 0, 0, 0] == pytest.approx((10 / 255 - 0.485) / 0.229, abs=1e-5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_normalised_pixels_are_the_cards_sums_in_its_layout(layout):
    spec = IMAGENET.model_copy(update={"layout": layout, "size": (24, 40), "resize_shorter": 24})
    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    x = to_input(Image.fromarray(pixels), spec)
    expected = (pixels / 255 - np.array(spec.mean)) / np.array(spec.std)  # float64, [H, W, 3]
    expected = expected.transpose(2, 0, 1) if layout == "NCHW" else expected
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == (1, *expected.shape)
    assert np.abs(x[0] - expected).max() < 1e-5


def test_centre_crop_keeps_the_middle():
    image = Image.new("RGB", (96, 32), (0, 0, 0))
    image.paste((255, 255, 255), (32, 0, 64, 32))  # white middle third
    assert (to_input(image, CIFAR) == 255).all()


def test_top_k_sorts_and_softmaxes_logits():
    labels = ["a", "b", "c"]
    assert [t[0] for t in top_k(np.array([0.2, 0.5, 0.3]), labels, 2, "probabilities")] == ["b", "c"]
    tags = top_k(np.array([1.0, 3.0, 2.0]), labels, 3, "logits")
    assert [t[0] for t in tags] == ["b", "c", "a"] and sum(t[1] for t in tags) == pytest.approx(1.0)


def exif_block(orientation: int, x_resolution: bytes | None = None) -> bytes:
    """A raw EXIF block: the orientation, and optionally XResolution (a rational) written as text,
    which Pillow reads back as a string and fails to write again."""
    entries = [struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)]
    if x_resolution is not None:
        entries.append(struct.pack("<HHI", 0x011A, 2, len(x_resolution)) + x_resolution.ljust(4, b"\0"))
    return b"Exif\0\0II*\0" + struct.pack("<IH", 8, len(entries)) + b"".join(entries) + struct.pack("<I", 0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_is_turned_upright_as_pillow_does_it(orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "PNG", exif=exif_block(orientation))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert np.array_equal(np.asarray(decode_photo(data, 10_000, LOC)), np.asarray(expected))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_photo_with_corrupt_exif_is_served_upright(fmt):
    # ImageOps.exif_transpose raised TypeError here (a 500): it writes the EXIF again, value by value
    data = encode(Image.new("RGB", (40, 20), (200, 10, 10)), fmt, exif=exif_block(6, b"bad"))
    assert decode_photo(data, 10_000, LOC).size == (20, 40)


def test_fast_jpeg_decode_shrinks_in_the_decoder_no_smaller_than_the_resize_and_keeps_the_picture():
    """NNSERVE_FAST_JPEG_DECODE: a large JPEG comes out of the decoder at a reduced scale whose shorter side
    is still at least the model's resize; EXIF rotation still applies; other formats and small JPEGs as before."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 1600, dtype=np.float32)
    pixels = (ramp[None, :, None] * 0.6 + ramp[:1200, None, None] * 0.4 + rng.normal(0, 4, (1200, 1600, 3))).clip(
        0, 255
    )
    photo = Image.fromarray(pixels.astype(np.uint8))
    data = encode(photo, "JPEG")
    full, fast = decode_photo(data, 10**8, LOC), decode_photo(data, 10**8, LOC, shorter=256)
    assert full.size == (1600, 1200) and fast.size == (400, 300)  # 1/4: 1/8 would be 150 px, under 256
    assert decode_photo(data, 10**8, LOC, shorter=32).size == (200, 150)  # 1/8, the smallest libjpeg makes
    x, y = to_input(full, IMAGENET), to_input(fast, IMAGENET)
    assert x.shape == y.shape and np.abs(x - y).mean() < 0.02  # 0.0044 measured; mean |x| 0.51
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: stored landscape, shown portrait
    turned = io.BytesIO()
    photo.save(turned, "JPEG", exif=exif)
    assert decode_photo(turned.getvalue(), 10**8, LOC, shorter=256).size == (300, 400)
    assert decode_photo(encode(photo, "PNG"), 10**8, LOC, shorter=256).size == (1600, 1200)  # JPEG only
    small = encode(photo.resize((400, 300)), "JPEG")
    assert decode_photo(small, 10**8, LOC, shorter=256).size == (400, 300)  # under twice the resize: whole
