"""Dataset sources by name. A new source is one module with ``load(params, seed) -> RawDataset``
plus one entry here."""

from __future__ import annotations

from typing import Callable

from . import digits
from .prepared import PreparedData, RawDataset, load_prepared, write_prepared

DATASETS: dict[str, Callable] = {
    "digits": digits.load,
}

__all__ = ["DATASETS", "PreparedData", "RawDataset", "load_prepared", "write_prepared", "prepare"]


def prepare(params, seed: int, out_dir) -> dict:
    """Materialise the dataset ``params.name`` into ``out_dir`` in the canonical form."""
    raw = DATASETS[params.name](params, seed)
    return write_prepared(out_dir, raw)
