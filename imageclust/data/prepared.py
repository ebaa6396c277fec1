"""The canonical prepared form that the download stage writes and every later stage reads.

``data/prepared/`` holds
- ``images.npy``: uint8 pixels, shape (n, height, width, channels), memory-mappable;
- ``samples.parquet``: one row per sample: ``id`` (stable string), ``index`` (row in images.npy),
  ``split`` and ``label`` (null when unknown);
- ``meta.json``: dataset name, class names, image shape, counts per split, files skipped and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError
from ..io import atomic_dir, read_json, write_json
from ..tables import UNLABELED, _labels_from_arrow, _labels_to_arrow

IMAGES_FILE = "images.npy"
SAMPLES_FILE = "samples.parquet"
META_FILE = "meta.json"


@dataclass
class RawDataset:
    """A dataset in memory, as a source module returns it before it is written out."""

    name: str
    images: np.ndarray  # uint8 (n, h, w, c)
    labels: np.ndarray  # int64 (n,), UNLABELED where unknown
    splits: np.ndarray  # str (n,)
    ids: np.ndarray  # str (n,)
    classes: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (n, h, w, c), got {self.images.dtype} {self.images.shape}")
        for name in ("labels", "splits", "ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, images have {n}")
        if len(set(self.ids.tolist())) != n:
            raise ValueError("sample ids are not unique")


@dataclass
class PreparedData:
    images: np.ndarray  # memory-mapped uint8 (n, h, w, c)
    ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    meta: dict

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    def indices(self, splits: list[str] | None = None) -> np.ndarray:
        """Row indices of the samples in ``splits`` (all samples when None)."""
        if splits is None:
            return np.arange(len(self.ids))
        unknown = sorted(set(splits) - set(self.meta["counts"]))
        if unknown:
            raise DataError(f"split {unknown[0]!r} not in the prepared data; it has: {', '.join(self.meta['counts'])}")
        return np.flatnonzero(np.isin(self.splits, splits))


def write_prepared(out_dir: str | Path, data: RawDataset) -> dict:
    """Write ``data`` in the canonical form, atomically as a whole folder; return the meta."""
    n, height, width, channels = data.images.shape
    splits, counts = np.unique(data.splits, return_counts=True)
    meta = {
        "name": data.name,
        "classes": list(data.classes),
        "height": int(height),
        "width": int(width),
        "channels": int(channels),
        "num_samples": int(n),
        "labeled": int((data.labels != UNLABELED).sum()),
        "counts": {str(s): int(c) for s, c in zip(splits, counts)},
        "skipped": dict(data.skipped),
    }
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / IMAGES_FILE, np.ascontiguousarray(data.images), allow_pickle=False)
        table = pa.table(
            {
                "id": pa.array(np.asarray(data.ids, dtype=str)),
                "index": pa.array(np.arange(n, dtype=np.int64)),
                "split": pa.array(np.asarray(data.splits, dtype=str)),
                "label": _labels_to_arrow(data.labels),
            }
        )
        pq.write_table(table, tmp / SAMPLES_FILE)
        write_json(tmp / META_FILE, meta)
    return meta


def load_prepared(prepared_dir: str | Path) -> PreparedData:
    prepared_dir = Path(prepared_dir)
    missing = [f for f in (IMAGES_FILE, SAMPLES_FILE, META_FILE) if not (prepared_dir / f).exists()]
    if missing:
        raise DataError(f"{prepared_dir}: missing {', '.join(missing)}; run the download stage")
    table = pq.read_table(prepared_dir / SAMPLES_FILE)
    images = np.load(prepared_dir / IMAGES_FILE, mmap_mode="r")
    index = table.column("index").to_numpy()
    if len(index) != len(images) or not np.array_equal(index, np.arange(len(images))):
        raise DataError(f"{prepared_dir}: {SAMPLES_FILE} does not match {IMAGES_FILE}")
    return PreparedData(
        images=images,
        ids=np.asarray(table.column("id").to_pylist(), dtype=object),
        splits=np.asarray(table.column("split").to_pylist(), dtype=object),
        labels=_labels_from_arrow(table.column("label")),
        meta=read_json(prepared_dir / META_FILE),
    )
