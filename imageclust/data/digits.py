"""scikit-learn's digits: 1,797 gray 8x8 images of 10 digits, shipped inside scikit-learn (offline)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ..tables import UNLABELED
from .prepared import RawDataset

DIGITS_MAX_VALUE = 16  # load_digits() pixels are counts in [0, 16]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """'train'/'test' per sample, stratified by label and reproducible for a seed."""
    splits = np.full(len(labels), "train", dtype=object)
    if test_fraction > 0:
        stratify = labels if (labels != UNLABELED).all() else None
        _, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=stratify
        )
        splits[test_idx] = "test"
    return splits


def load(params, seed: int) -> RawDataset:
    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / DIGITS_MAX_VALUE)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    return RawDataset(
        name="digits",
        images=pixels[..., None],
        labels=labels,
        splits=stratified_split(labels, params.test_fraction, seed),
        ids=np.array([f"digits-{i:04d}" for i in range(len(labels))], dtype=object),
        classes=[str(c) for c in digits.target_names],
    )
