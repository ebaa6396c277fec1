"""scikit-learn's digits: 1,797 gray 8x8 images of 10 digits, shipped inside scikit-learn (offline)."""

from __future__ import annotations

import numpy as np

from .source import Source, array_source, stratified_split

DIGITS_MAX_VALUE = 16  # load_digits() pixels are counts in [0, 16]


def load(params, seed: int) -> Source:
    from sklearn.datasets import load_digits  # here: scikit-learn is slow to import

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / DIGITS_MAX_VALUE)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    return array_source("digits", pixels, labels, stratified_split(labels, params.test_fraction, seed),
                        [f"digits-{i:04d}" for i in range(len(labels))], [str(c) for c in digits.target_names])
