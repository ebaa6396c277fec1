"""Decoding one image: large JPEGs decode scaled down in the DCT (draft mode) when a small side is
wanted, with the pixels of a full decode and resize, near enough."""

import io

import numpy as np
from PIL import Image, ImageFilter

from imageclust.data.images import to_canonical


def jpeg(width=500, height=375, seed=0) -> bytes:
    noise = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).filter(ImageFilter.GaussianBlur(3)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_large_jpeg_for_a_small_side_decodes_in_draft_mode_close_to_a_full_decode():
    data = jpeg()
    drafted = Image.open(io.BytesIO(data))
    fast = to_canonical(drafted, 64, 3)
    assert drafted.size == (250, 188)  # libjpeg decoded it at half size: still twice the side
    full = Image.open(io.BytesIO(data))
    full.format = None  # not known as a JPEG: decoded whole, then resized
    slow = to_canonical(full, 64, 3)
    assert fast.shape == slow.shape == (64, 64, 3)
    assert np.abs(fast.astype(float) - slow.astype(float)).mean() < 2.0


def test_no_draft_without_a_target_side_or_for_a_small_image():
    image = Image.open(io.BytesIO(jpeg(40, 30)))
    assert to_canonical(image, 32, 3).shape == (32, 32, 3) and image.size == (40, 30)
    native = Image.open(io.BytesIO(jpeg(48, 48)))
    assert to_canonical(native, None, 3).shape == (48, 48, 3)
