"""Tables of pixels: CSV or parquet with a label column and one column per pixel, as the
Fashion-MNIST CSV release is laid out.

Columns: ``data.label_column`` (ints or class names; absent or null means unlabelled), optional
``split`` and ``id``; every other column is a pixel. n pixel columns make an s x s gray image when
n = s^2, an s x s RGB image when n = 3 s^2 (pixel-major: r, g, b of the first pixel, then the
second...). Values 0-255, or floats in [0, 1]. The table is streamed batch by batch into a temporary
memory-mapped file, so its size is not bounded by memory.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import DataError
from .arrays import _class_index
from .source import Source, stratified_split

META_COLUMNS = ("split", "id")


def _batches(path: Path):
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from pq.ParquetFile(path).iter_batches(batch_size=8192)
    elif name.endswith((".csv", ".csv.gz")):
        yield from pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 24))
    else:
        raise DataError(f"data.root={str(path)!r}: expected a .csv, .csv.gz or .parquet table")


def _image_shape(num_pixels: int, where: str) -> tuple[int, int, int]:
    for channels in (1, 3):
        side = math.isqrt(num_pixels // channels)
        if side * side * channels == num_pixels:
            return side, side, channels
    raise DataError(f"{where}: {num_pixels} pixel columns make neither a square gray (s*s) nor a square RGB "
                    f"(3*s*s) image")


def _pixels(batch: pa.RecordBatch, columns: list[str], where: str) -> np.ndarray:
    values = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False) for c in columns])
    if values.dtype.kind == "f":
        if np.isnan(values).any():
            raise DataError(f"{where}: missing pixel values")
        if values.max(initial=0) <= 1.0:
            values = values * 255.0
        values = np.rint(values)
    if values.dtype.kind not in "fiu":
        raise DataError(f"{where}: pixel columns must be numeric, got {values.dtype}")
    if values.min(initial=0) < 0 or values.max(initial=0) > 255:
        bad = columns[int(np.argmax((values < 0).any(0) | (values > 255).any(0)))]
        raise DataError(f"{where}: column {bad!r} has values outside 0-255")
    return values.astype(np.uint8)


def load(params, seed: int) -> Source:
    if not params.root:
        raise DataError("data.root is not set: give the path of a .csv or .parquet table")
    path = Path(params.root)
    if not path.is_file():
        raise DataError(f"data.root={params.root!r} not found")
    Path(params.download_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="pixel-table-", dir=params.download_dir))
    try:
        return _stream(path, params, seed, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _stream(path: Path, params, seed: int, scratch: Path) -> Source:
    labels, splits, ids, pixel_columns, rows = [], [], [], None, 0
    with open(scratch / "pixels.u8", "wb") as out:
        for batch in _batches(path):
            names = batch.schema.names
            if pixel_columns is None:
                pixel_columns = [c for c in names if c not in (params.label_column, *META_COLUMNS)]
                shape = _image_shape(len(pixel_columns), params.root)
            out.write(_pixels(batch, pixel_columns, params.root).tobytes())
            if params.label_column in names:
                column = batch.column(params.label_column)
                labels.append(pc.fill_null(column, -1 if pa.types.is_integer(column.type) else "").to_numpy(
                    zero_copy_only=False))
            else:
                labels.append(np.full(batch.num_rows, -1))
            if "split" in names:
                splits.append(batch.column("split").to_numpy(zero_copy_only=False).astype(object))
            if "id" in names:
                ids.append(batch.column("id").to_numpy(zero_copy_only=False).astype(str).astype(object))
            rows += batch.num_rows
    if rows == 0:
        raise DataError(f"data.root={params.root!r}: the table has no rows")
    images = np.memmap(scratch / "pixels.u8", dtype=np.uint8, mode="r", shape=(rows, *shape))
    raw_labels = np.concatenate(labels)
    if raw_labels.dtype.kind not in "iu":  # class names: an empty string stands for a missing label
        raw_labels = np.where(raw_labels.astype(str) == "", None, raw_labels)
    label_index, classes = _labels(raw_labels)
    split_names = np.concatenate(splits) if splits else stratified_split(label_index, params.test_fraction, seed)
    sample_ids = np.concatenate(ids) if ids else np.asarray([f"row-{i:07d}" for i in range(rows)], dtype=object)
    return Source(name=path.name.split(".")[0], classes=classes, ids=sample_ids, splits=split_names,
                  labels=label_index, read=lambda i: np.asarray(images[i]),
                  sizes=np.tile(shape[:2], (rows, 1)), color=np.full(rows, shape[2] == 3),
                  cleanup=lambda: shutil.rmtree(scratch, ignore_errors=True))


def _labels(raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
    if raw.dtype == object:
        known = np.array([v is not None for v in raw])
        index = np.full(len(raw), -1, dtype=np.int64)
        if known.any():
            index[known], classes = _class_index(raw[known].astype(str))
            return index, classes
        return index, []
    return _class_index(raw)
