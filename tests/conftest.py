"""Shared fixtures: tiny real data (a slice of scikit-learn's digits) in the prepared form."""

from __future__ import annotations

import numpy as np
import pytest

from imageclust.config import DataParams
from imageclust.data import digits, write_prepared
from imageclust.data.prepared import RawDataset


def tiny_digits(n: int = 96, seed: int = 0) -> RawDataset:
    full = digits.load(DataParams(test_fraction=0.25), seed)
    keep = np.sort(np.random.default_rng(seed).choice(len(full.ids), n, replace=False))
    images = np.stack([full.read(i) for i in keep])
    return RawDataset(name="digits", images=images, labels=full.labels[keep], splits=full.splits[keep],
                      ids=full.ids[keep], classes=full.classes)


@pytest.fixture
def prepared_dir(tmp_path):
    out = tmp_path / "prepared"
    write_prepared(out, tiny_digits())
    return out
