"""What every dataset source hands to the download stage: a lazy list of samples.

A source lists its samples (id, split, label) without decoding any pixels, and reads one sample on
demand, so that a folder of a million images is never held in memory. The download stage then
selects splits, applies the sample limit and streams the pixels into the canonical form.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import DataError, ParamsError
from ..tables import UNLABELED
from .images import SkipSample

log = logging.getLogger(__name__)
# With data.image_size null, the largest side images are prepared at: covers the side ImageNet
# backbones see (224; EfficientNet-Lite1 240) at 196 kB an RGB image, where a phone's 4032 x 3024
# photo kept native takes 37 MB.
AUTO_SIZE_MAX = 256


@dataclass
class Source:
    name: str
    classes: list[str]
    ids: np.ndarray  # str, unique and stable across runs
    splits: np.ndarray  # str
    labels: np.ndarray  # int64 index into classes, UNLABELED where unknown
    read: Callable[[int], object]  # sample i as a PIL image or uint8 array; raises SkipSample
    # Native (height, width) of every sample when known without decoding, else None.
    sizes: Optional[np.ndarray] = None
    # Whether each sample is in colour, when known without decoding, else None.
    color: Optional[np.ndarray] = None
    # Side length to resize to when data.image_size is null and native sizes differ (GTSRB, say);
    # without it such sources are prepared at their median shorter side (at most AUTO_SIZE_MAX).
    default_size: Optional[int] = None
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)  # e.g. empty class folders, for meta.json
    cleanup: Callable[[], None] = lambda: None  # removes temporary files (unpacked archives)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.ids)
        for name in ("splits", "labels"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, ids have {n}")
        if len(set(self.ids.tolist())) != n:
            raise ValueError(f"{self.name}: sample ids are not unique")

    def __len__(self) -> int:
        return len(self.ids)


def array_source(name: str, images: np.ndarray, labels, splits, ids, classes: list[str], **kwargs) -> Source:
    """A source over a uint8 array (n, h, w) or (n, h, w, c), in memory or memory-mapped."""
    if images.dtype != np.uint8:
        raise DataError(f"{name}: pixels must be uint8 (0-255), got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DataError(f"{name}: expected images of shape (n, h, w) or (n, h, w, 1|3), got {images.shape}")
    n, height, width, channels = images.shape
    sizes = np.tile(np.array([height, width]), (n, 1))
    color = np.full(n, channels == 3)
    return Source(name=name, classes=classes, ids=np.asarray(ids, dtype=object),
                  splits=np.asarray(splits, dtype=object), labels=labels,
                  read=lambda i: np.asarray(images[i]), sizes=sizes, color=color, **kwargs)


def concatenated_reader(readers: list[Callable[[int], object]], counts: list[int]) -> Callable[[int], object]:
    """One ``read(i)`` over several parts (splits, say) laid end to end."""
    offsets = np.cumsum([0, *counts])

    def read(i: int):
        part = int(np.searchsorted(offsets, i, side="right")) - 1
        return readers[part](i - int(offsets[part]))

    return read


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """'train'/'test' per sample, stratified by label where every class allows it, reproducible for a seed."""
    splits = np.full(len(labels), "train", dtype=object)
    if test_fraction > 0 and len(labels) > 1:
        _, test_idx = _split_indices(np.arange(len(labels)), labels, test_size=test_fraction, seed=seed)
        splits[test_idx] = "test"
    return splits


def _split_indices(indices: np.ndarray, labels: np.ndarray, seed: int, **sizes):
    from sklearn.model_selection import train_test_split  # here: scikit-learn costs every stage a second to import

    counts = Counter(labels.tolist())
    stratify = labels if UNLABELED not in counts and min(counts.values()) >= 2 and len(counts) > 1 else None
    try:
        return train_test_split(indices, random_state=seed, stratify=stratify, **sizes)
    except ValueError:  # too few samples per class for the requested size: fall back to a plain split
        return train_test_split(indices, random_state=seed, stratify=None, **sizes)


def select_samples(source: Source, splits: list[str] | None, max_per_split: int | None, seed: int) -> np.ndarray:
    """Indices of the samples to prepare: the chosen splits, at most ``max_per_split`` of each
    (a stratified, seeded subset), in the source's order."""
    available = list(dict.fromkeys(source.splits.tolist()))
    chosen = available if splits is None else splits
    missing = [s for s in chosen if s not in available]
    if missing:
        raise ParamsError(f"params: data.splits={splits} is invalid: {source.name} has splits {available}")
    keep = []
    for split in chosen:
        indices = np.flatnonzero(source.splits == split)
        if max_per_split is not None and len(indices) > max_per_split:
            indices, _ = _split_indices(indices, source.labels[indices], seed, train_size=max_per_split)
        keep.append(indices)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def target_shape(source: Source, indices: np.ndarray, image_size: int | None,
                 channels: int | None) -> tuple[int, int, int]:
    """(height, width, channels) of the canonical form."""
    if channels is None:
        channels = 3 if source.color is None or source.color[indices].any() else 1
    if image_size is None and source.sizes is not None:
        distinct = np.unique(source.sizes[indices], axis=0)
        if len(distinct) == 1 and distinct[0].min() <= AUTO_SIZE_MAX:
            return int(distinct[0][0]), int(distinct[0][1]), channels
    size = image_size or source.default_size
    if size is None and source.sizes is not None and len(indices):
        # Photos of mixed sizes (nearly every real folder) or all large (one camera's): the median
        # shorter side, at most AUTO_SIZE_MAX, so an ImageNet backbone still sees its own side
        # without storing megapixels.
        size = min(int(np.median(source.sizes[indices].min(axis=1))), AUTO_SIZE_MAX)
        log.info("%s: images differ in size or are larger than %d px; preparing them at %d x %d (the median "
                 "shorter side, at most %d; data.image_size sets it)", source.name, AUTO_SIZE_MAX, size, size,
                 AUTO_SIZE_MAX)
    if size is None:
        raise ParamsError(f"params: data.image_size=None is invalid: {source.name} images differ in size "
                          "and their sizes are unknown before decoding; set data.image_size")
    return size, size, channels


def log_skip(path_or_id: str, reason: str, counter: Counter, max_lines: int = 20) -> None:
    """Count a skipped sample and warn about the first few."""
    counter[reason] += 1
    total = sum(counter.values())
    if total <= max_lines:
        log.warning("skipping %s: %s", path_or_id, reason)
    elif total == max_lines + 1:
        log.warning("more samples skipped; the counts per reason are in the stage's metrics")


__all__ = ["Source", "SkipSample", "array_source", "concatenated_reader", "stratified_split", "select_samples", "target_shape", "log_skip"]
