"""Pixel arrays a user already has: a ``.npz`` archive, or a folder with ``images.npy`` (and
``labels.npy``).

Accepted layouts: (n, h, w) gray, (n, h, w, c) or (n, c, h, w) with c in {1, 3, 4} (4: RGBA,
composited onto white); uint8 0-255, uint16 (scaled by 65535) or float in [0, 1]. A ``.npz`` may
instead hold Keras-style ``x_train``/``y_train``/``x_test``/``y_test``, which become the splits.
``.npy`` files are memory-mapped; a ``.npz`` is read into memory, so prefer ``.npy`` for large data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..tables import UNLABELED
from .images import SkipSample
from .source import Source, concatenated_reader, stratified_split

IMAGE_KEYS = ("images", "x", "X", "data")
LABEL_KEYS = ("labels", "y", "Y", "targets")


def _channels_last(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim == 3:
        return images[..., None]
    if images.ndim == 4 and images.shape[3] not in (1, 3, 4) and images.shape[1] in (1, 3, 4):
        return images.transpose(0, 2, 3, 1)  # (n, c, h, w): a view, nothing is copied
    if images.ndim == 4 and images.shape[3] in (1, 3, 4):
        return images
    raise DataError(f"{where}: images of shape {images.shape}; expected (n, h, w), (n, h, w, c) or (n, c, h, w)")


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """One image's pixels as uint8, by the range its dtype implies."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return np.rint(pixels / 257.0).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all():
            raise SkipSample("non-finite pixels")
        return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.integer):
        if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
            raise SkipSample("pixel values outside 0-255")
        return pixels.astype(np.uint8)
    raise SkipSample(f"unsupported pixel type {pixels.dtype}")


def _reader(images: np.ndarray):
    def read(i: int):
        pixels = to_uint8(np.asarray(images[i]))
        if pixels.shape[2] == 4:  # RGBA: let the image code composite it like an RGBA file
            return Image.fromarray(np.ascontiguousarray(pixels), mode="RGBA")
        return pixels

    return read


def _class_index(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Labels as indices into sorted class names; negative or missing labels mean unlabelled."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        known = labels >= 0
        classes = np.unique(labels[known])
        index = np.full(len(labels), UNLABELED, dtype=np.int64)
        index[known] = np.searchsorted(classes, labels[known])
        return index, [str(c) for c in classes]
    names = labels.astype(str)
    classes = sorted(set(names.tolist()))
    return np.searchsorted(np.asarray(classes), names).astype(np.int64), classes


def _pick(arrays, keys: tuple[str, ...]):
    return next((arrays[k] for k in keys if k in arrays), None)


def _load_arrays(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """{split or '': (images, labels or None)} from a .npz file or a folder of .npy files."""
    if root.is_dir():
        images_path = root / "images.npy"
        if not images_path.exists():
            raise DataError(f"data.root={str(root)!r}: no images.npy in the folder")
        labels_path = root / "labels.npy"
        labels = np.load(labels_path, allow_pickle=False) if labels_path.exists() else None
        return {"": (np.load(images_path, mmap_mode="r", allow_pickle=False), labels)}
    if root.suffix != ".npz":
        raise DataError(f"data.root={str(root)!r}: expected a .npz file or a folder holding images.npy")
    with np.load(root, allow_pickle=False) as npz:
        arrays = dict(npz)
    if "x_train" in arrays:
        return {split: (arrays[f"x_{split}"], arrays.get(f"y_{split}"))
                for split in ("train", "test", "val") if f"x_{split}" in arrays}
    images = _pick(arrays, IMAGE_KEYS)
    if images is None:
        raise DataError(f"data.root={str(root)!r}: no image array; expected one of {', '.join(IMAGE_KEYS)} "
                        f"or x_train/x_test, found {', '.join(arrays) or 'nothing'}")
    return {"": (images, _pick(arrays, LABEL_KEYS))}


def load(params, seed: int) -> Source:
    if not params.root:
        raise DataError("data.root is not set: give a .npz file or a folder holding images.npy")
    root = Path(params.root)
    if not root.exists():
        raise DataError(f"data.root={params.root!r} not found")
    parts = _load_arrays(root)
    images, labels, splits, ids = [], [], [], []
    for split, (split_images, split_labels) in parts.items():
        split_images = _channels_last(split_images, params.root)
        n = len(split_images)
        if split_labels is not None and len(split_labels) != n:
            raise DataError(f"data.root={params.root!r}: {len(split_labels)} labels for {n} images")
        images.append(split_images)
        labels.append(np.full(n, -1) if split_labels is None else np.asarray(split_labels).reshape(n))
        splits.append(np.full(n, split, dtype=object))
        ids += [f"{split or 'sample'}-{i:07d}" for i in range(n)]
    if len({im.shape[1:3] for im in images}) > 1:
        raise DataError(f"data.root={params.root!r}: the splits' images differ in size")
    label_index, classes = _class_index(np.concatenate(labels))
    split_names = np.concatenate(splits)
    if parts.keys() == {""}:
        split_names = stratified_split(label_index, params.test_fraction, seed)
    read = concatenated_reader([_reader(im) for im in images], [len(im) for im in images])
    height, width, channels = images[0].shape[1:]
    return Source(name=root.name, classes=classes, ids=np.asarray(ids, dtype=object), splits=split_names,
                  labels=label_index, read=read, sizes=np.tile([height, width], (len(ids), 1)),
                  color=np.full(len(ids), channels >= 3))
