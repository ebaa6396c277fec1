"""The canonical prepared form that the download stage writes and every later stage reads.

``data/prepared/`` holds
- ``images.npy``: uint8 pixels, shape (n, height, width, channels), memory-mappable;
- ``samples.parquet``: one row per sample: ``id`` (stable string), ``index`` (row in images.npy),
  ``split`` and ``label`` (null when unknown);
- ``meta.json``: dataset name, class names, image shape, counts per split, files skipped and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import raw_value
from ..errors import DataError, ParamsError
from ..io import atomic_dir, fingerprint, read_json, write_json
from ..tables import UNLABELED, _labels_from_arrow, _labels_to_arrow

IMAGES_FILE = "images.npy"
SAMPLES_FILE = "samples.parquet"
META_FILE = "meta.json"
DEFAULT_TRAIN_SPLITS = ("train",)


def train_splits(raw: dict) -> list[str]:
    """``data.train_splits`` of an already-read params mapping, for the stages that fit on those
    splits: they read this one key of the ``data`` section (``check_params`` validated it), so that
    the dataset sources are not their code and editing one never reruns them."""
    value = raw_value(raw, "data.train_splits", list(DEFAULT_TRAIN_SPLITS))
    if not (isinstance(value, list) and value and all(isinstance(s, str) for s in value)):
        raise ParamsError(f"params: data.train_splits={value!r} is invalid: must be a list of split names")
    return value


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


class ImageRows:
    """Contiguous rows of ``images.npy`` read with plain file reads rather than a memory map: the pages
    read never stay mapped in the process, so its memory holds one batch however large the file is.
    Picklable, so loader worker processes each open the file themselves."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if dtype != np.uint8 or fortran or len(shape) != 4:
            raise DataError(f"{self.path}: expected uint8 (n, h, w, c) in C order, got {dtype} {shape}")
        self.shape = tuple(int(d) for d in shape)
        self.row_bytes = int(np.prod(self.shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            data = f.read((stop - start) * self.row_bytes)
        if len(data) != (stop - start) * self.row_bytes:
            raise DataError(f"{self.path}: truncated at row {start}; rerun the download stage")
        return np.frombuffer(bytearray(data), dtype=np.uint8).reshape(stop - start, *self.shape[1:])


class PreparedWriter:
    """Streams samples into ``folder`` in the canonical form: pixels go straight into a memory-mapped
    ``images.npy``, so memory stays bounded by one image whatever the dataset's size."""

    def __init__(self, folder: Path, capacity: int, shape: tuple[int, int, int]):
        self.folder, self.shape = Path(folder), tuple(shape)
        self.images = np.lib.format.open_memmap(self.folder / IMAGES_FILE, mode="w+", dtype=np.uint8,
                                                shape=(capacity, *self.shape))
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.labels: list[int] = []

    def add(self, pixels: np.ndarray, sample_id: str, split: str, label: int) -> None:
        if pixels.shape != self.shape:
            raise ValueError(f"{sample_id}: pixels of shape {pixels.shape}, expected {self.shape}")
        self.images[len(self.ids)] = pixels
        self.ids.append(str(sample_id))
        self.splits.append(str(split))
        self.labels.append(int(label))

    def finish(self, name: str, classes: list[str], skipped: dict, notes: list[str] = (),
               prepared_with: str | None = None) -> dict:
        n = len(self.ids)
        self.images.flush()
        shrunk = n < len(self.images)
        if shrunk:  # some samples were skipped: keep the filled rows only
            self._write_prefix(n, self.folder / f"{IMAGES_FILE}.shrunk")
        del self.images  # closes the memory map
        if shrunk:
            os.replace(self.folder / f"{IMAGES_FILE}.shrunk", self.folder / IMAGES_FILE)
        labels = np.asarray(self.labels, dtype=np.int64)
        splits, counts = np.unique(np.asarray(self.splits, dtype=object), return_counts=True)
        height, width, channels = self.shape
        meta = {
            "name": name,
            "classes": list(classes),
            "height": int(height),
            "width": int(width),
            "channels": int(channels),
            "num_samples": n,
            "labeled": int((labels != UNLABELED).sum()),
            "counts": {str(s): int(c) for s, c in zip(splits, counts)},
            "skipped": {str(k): int(v) for k, v in sorted(skipped.items())},
            "notes": list(notes),
            "prepared_with": prepared_with,  # preparation_key() of the params it was made with
        }
        table = pa.table(
            {
                "id": pa.array(self.ids, type=pa.string()),
                "index": pa.array(np.arange(n, dtype=np.int64)),
                "split": pa.array(self.splits, type=pa.string()),
                "label": _labels_to_arrow(labels),
            }
        )
        pq.write_table(table, self.folder / SAMPLES_FILE)
        write_json(self.folder / META_FILE, meta)
        return meta

    def _write_prefix(self, n: int, path: Path, chunk: int = 4096) -> None:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (n, *self.shape)})
            for start in range(0, n, chunk):
                f.write(np.ascontiguousarray(self.images[start : min(n, start + chunk)]).tobytes())


def preparation_key(data_params, seed: int) -> str:
    """Identifies the params a prepared folder was made with: the ``data`` keys the download stage
    reads (not ``train_splits``, which only later stages read) and the seed."""
    return fingerprint(data_params.model_dump(exclude={"train_splits"}), seed)


def write_prepared(out_dir: str | Path, data: RawDataset) -> dict:
    """Write an in-memory dataset in the canonical form, atomically as a whole folder; return the meta."""
    with atomic_dir(out_dir) as tmp:
        writer = PreparedWriter(tmp, len(data.images), data.images.shape[1:])
        for pixels, sample_id, split, label in zip(data.images, data.ids, data.splits, data.labels):
            writer.add(pixels, sample_id, split, label)
        return writer.finish(data.name, data.classes, data.skipped)


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
