"""Decoding and converting one image into the canonical uint8 (height, width, channels) array.

Real folders are messy; each case is handled here, in one place:
- palette, CMYK, YCbCr, LAB, HSV images are converted to RGB (or L for a gray target);
- transparency (RGBA, LA, palette with a transparent colour) is composited onto white;
- 16- and 32-bit integer images are scaled to 8 bits by their type's range, float images by [0, 1];
- gray images feed an RGB target by repeating the channel, colour images a gray one by luminance;
- EXIF orientation is applied, so phone photos come out upright;
- images larger than ``max_pixels`` are refused before decoding (decompression bombs);
- truncated or undecodable files raise ``SkipSample`` with the reason, never a crash.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a half-grey image
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class SkipSample(Exception):
    """This sample cannot be used; ``str(exc)`` is the reason, counted in the stage's metrics."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def open_image(path: str | Path, max_pixels: int) -> Image.Image:
    """Open ``path`` lazily (header only), refusing files that are not images or are too large."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SkipSample("too large" if "decompression" in str(exc).lower() or "pixels" in str(exc)
                         else "not an image") from None
    except OSError:
        raise SkipSample("unreadable") from None
    if image.width * image.height > max_pixels:
        image.close()
        raise SkipSample("too large")
    if image.width < 1 or image.height < 1:
        raise SkipSample("unreadable")
    return image


def is_color(image: Image.Image | np.ndarray) -> bool:
    if isinstance(image, np.ndarray):
        return image.ndim == 3 and image.shape[2] >= 3
    return image.mode not in GRAY_MODES and not (image.mode == "P" and _palette_is_gray(image))


def _palette_is_gray(image: Image.Image) -> bool:
    palette = image.getpalette()
    if not palette:
        return True
    rgb = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0
    else:
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) <= 65535 else float(pixels.max())
        scaled = np.clip(pixels, 0, None) * (255.0 / top)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent images onto white, as a viewer shows them."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    return image


def to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """A decoded 8-bit PIL image (L or RGB) from whatever a source yields."""
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            raise SkipSample("unsupported pixel type")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        return Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    except (OSError, SyntaxError, ValueError):
        raise SkipSample("corrupt") from None
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _high_depth_to_8bit(image)
    image = _flatten_alpha(image)
    if image.mode == "1":
        return image.convert("L")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    return image


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` and cut the centre square, keeping the aspect ratio."""
    w, h = image.size
    if (w, h) == (size, size):
        return image
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_canonical(image: Image.Image | np.ndarray, size: int | None, channels: int) -> np.ndarray:
    """uint8 (size, size, channels) pixels (native size when ``size`` is None)."""
    if (isinstance(image, np.ndarray) and size is None and image.dtype == np.uint8
            and image.ndim == 3 and image.shape[2] == channels):
        return image  # already canonical: the fast path for array datasets
    if size is not None and isinstance(image, Image.Image) and image.format == "JPEG":
        # a large photo for a small side: let libjpeg decode it scaled down (by 1/2, 1/4 or 1/8, in the
        # DCT) to no less than twice the side, so the resize below still has the pixels to average
        image.draft(image.mode, (2 * size, 2 * size))
    pil = to_pil(image)
    if size is not None:
        pil = resize_center_crop(pil, size)
    pil = pil.convert("L" if channels == 1 else "RGB")
    array = np.asarray(pil, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array
