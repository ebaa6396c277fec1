"""The two tables that flow between stages: feature vectors and cluster assignments.

Both are parquet with one row per sample, keyed by the sample ``id`` the download stage gave it,
so every stage can join on ids rather than trusting row order. A missing label is a null in
parquet and ``-1`` in memory (``UNLABELED``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import DataError
from .io import atomic_dir, atomic_path, read_json, write_json

UNLABELED = -1
FEATURES_META = "_meta.json"  # underscore: parquet readers of the folder skip it
SPACES_INDEX = "spaces.json"  # the extract_spaces stage's list of its feature folders
REFEREES_FOLDER = "referees"  # under the extract_spaces stage's folder: one features folder per referee space


def _labels_to_arrow(labels: np.ndarray) -> pa.Array:
    labels = np.asarray(labels, dtype=np.int64)
    return pa.array(labels, type=pa.int64(), mask=labels == UNLABELED)


def _labels_from_arrow(column: pa.ChunkedArray) -> np.ndarray:
    return column.fill_null(UNLABELED).to_numpy().astype(np.int64)


@dataclass
class FeatureTable:
    ids: np.ndarray  # str, (n,)
    splits: np.ndarray  # str, (n,)
    labels: np.ndarray  # int64, (n,), UNLABELED where unknown
    vectors: np.ndarray  # float32, (n, d)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, mask: np.ndarray) -> FeatureTable:
        return FeatureTable(self.ids[mask], self.splits[mask], self.labels[mask], self.vectors[mask])


VECTOR_TYPES = {"float32": pa.float32(), "float16": pa.float16()}


def feature_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    """The schema of every feature shard: plain columns any parquet reader understands."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("label", pa.int64()),
            ("vector", pa.list_(VECTOR_TYPES[dtype], dim)),
        ]
    )


def feature_batch(ids, splits, labels, vectors: np.ndarray, dtype: str = "float32") -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    flat = pa.array(vectors.reshape(-1), type=VECTOR_TYPES[dtype])
    return pa.Table.from_arrays(
        [
            pa.array(np.asarray(ids, dtype=str)),
            pa.array(np.asarray(splits, dtype=str)),
            _labels_to_arrow(labels),
            pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        ],
        schema=feature_schema(vectors.shape[1], dtype),
    )


class FeatureShardWriter:
    """One shard, appended batch by batch as parquet row groups under a temporary name and renamed
    into place when the ``with`` block ends without error: memory holds one batch, and a killed or
    failing writer leaves no shard behind."""

    def __init__(self, path: str | Path, dim: int, dtype: str = "float32"):
        self.path, self.dim, self.dtype, self.rows = Path(path), dim, dtype, 0

    def __enter__(self) -> FeatureShardWriter:
        self._atomic = atomic_path(self.path)
        self._writer = pq.ParquetWriter(self._atomic.__enter__(), feature_schema(self.dim, self.dtype))
        return self

    def write(self, ids, splits, labels, vectors: np.ndarray) -> None:
        self._writer.write_table(feature_batch(ids, splits, labels, vectors, self.dtype))
        self.rows += len(ids)

    def __exit__(self, *exc) -> bool:
        self._writer.close()
        return self._atomic.__exit__(*exc)


def write_features_meta(
    folder: str | Path, meta: dict, shard_rows: dict[str, int], dim: int, dtype: str = "float32"
) -> None:
    """``_meta.json``: what the vectors are, and the shards that make up the table (a reader checks them)."""
    write_json(
        Path(folder) / FEATURES_META,
        {
            **meta,
            "rows": int(sum(shard_rows.values())),
            "dim": int(dim),
            "dtype": dtype,
            "shards": [{"file": name, "rows": int(rows)} for name, rows in sorted(shard_rows.items())],
        },
    )


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_features(
    out_dir: str | Path, table: FeatureTable, meta: dict, shard_rows: int = 100_000, dtype: str = "float32"
) -> None:
    """Write an in-memory table as shards of ``shard_rows`` rows plus ``_meta.json``, atomically as a folder.
    (The extract stage streams instead: see ``imageclust.features``.)"""
    dim = int(table.vectors.shape[1])
    rows = {}
    with atomic_dir(out_dir) as tmp:
        for shard, start in enumerate(range(0, max(len(table), 1), shard_rows)):
            part = table.select(slice(start, start + shard_rows))
            with FeatureShardWriter(tmp / shard_name(shard), dim, dtype) as writer:
                writer.write(part.ids, part.splits, part.labels, part.vectors)
            rows[shard_name(shard)] = writer.rows
        write_features_meta(tmp, meta, rows, dim, dtype)


def read_features_meta(features_dir: str | Path) -> dict:
    path = Path(features_dir) / FEATURES_META
    if not path.is_file():
        raise DataError(f"{features_dir}: no feature shards ({FEATURES_META} missing); run the extract stage")
    return read_json(path)


def feature_shards(features_dir: str | Path) -> list[Path]:
    """The shard files ``_meta.json`` lists, each checked to exist with the rows it should hold."""
    meta = read_features_meta(features_dir)
    shards = [Path(features_dir) / s["file"] for s in meta.get("shards", [])]
    if not shards:
        raise DataError(f"{features_dir}: no feature shards listed in {FEATURES_META}; run the extract stage")
    for shard, expected in zip(shards, meta["shards"]):
        if not shard.is_file():
            raise DataError(f"{shard}: feature shard missing; rerun the extract stage")
        rows = pq.read_metadata(shard).num_rows
        if rows != expected["rows"]:
            raise DataError(
                f"{shard}: holds {rows} rows, {FEATURES_META} says {expected['rows']}; rerun the extract stage"
            )
    return shards


def read_features(features_dir: str | Path, splits: list[str] | None = None) -> FeatureTable:
    """The feature table (only ``splits`` when given), read shard by shard into one float32 array:
    besides the vectors themselves, memory holds one record batch."""
    meta, shards = read_features_meta(features_dir), feature_shards(features_dir)
    wanted = None if splits is None else pa.array(splits, pa.string())
    n, dim = int(meta["rows"]), int(meta["dim"])
    if wanted is not None:  # a first pass over the split column alone sizes the array
        n = sum(
            int(pc.sum(pc.is_in(pq.read_table(s, columns=["split"]).column("split"), value_set=wanted)).as_py() or 0)
            for s in shards
        )
    vectors = np.empty((n, dim), dtype=np.float32)
    ids, split_parts, labels, filled = [], [], [], 0
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=65_536):
            table = pa.Table.from_batches([batch])
            if wanted is not None:
                table = table.filter(pc.is_in(table.column("split"), value_set=wanted))
            rows = table.num_rows
            flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            vectors[filled : filled + rows] = flat.reshape(rows, dim)
            ids.append(np.asarray(table.column("id").to_pylist(), dtype=object))
            split_parts.append(np.asarray(table.column("split").to_pylist(), dtype=object))
            labels.append(_labels_from_arrow(table.column("label")))
            filled += rows
    if filled != n:
        raise DataError(f"{features_dir}: read {filled} rows, expected {n}; rerun the extract stage")
    empty = np.array([], dtype=object)
    return FeatureTable(
        ids=np.concatenate(ids) if ids else empty,
        splits=np.concatenate(split_parts) if split_parts else empty,
        labels=np.concatenate(labels) if labels else np.array([], dtype=np.int64),
        vectors=vectors,
    )


@dataclass
class Assignments:
    ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray  # UNLABELED where unknown
    clusters: np.ndarray  # int64 cluster index in [0, k)
    confidence: np.ndarray  # float32 in [0, 1]: how sure the method is of the cluster
    num_clusters: int | None = None  # K as the method set it (clusters may be empty); stored in the file

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, features: FeatureTable, clusters, confidence, num_clusters: int) -> Assignments:
        """Every row of ``features`` (ids, splits, labels carried through) with its cluster."""
        return cls(features.ids, features.splits, features.labels, clusters, confidence, num_clusters)


def write_assignments(path: str | Path, a: Assignments) -> None:
    table = pa.table(
        {
            "id": pa.array(np.asarray(a.ids, dtype=str)),
            "split": pa.array(np.asarray(a.splits, dtype=str)),
            "label": _labels_to_arrow(a.labels),
            "cluster": pa.array(np.asarray(a.clusters, dtype=np.int64)),
            "confidence": pa.array(np.asarray(a.confidence, dtype=np.float32)),
        }
    )
    if a.num_clusters is not None:
        table = table.replace_schema_metadata({"num_clusters": str(int(a.num_clusters))})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_assignments(path: str | Path) -> Assignments:
    table = pq.read_table(path)
    k = (table.schema.metadata or {}).get(b"num_clusters")
    return Assignments(
        num_clusters=int(k) if k is not None else None,
        ids=np.asarray(table.column("id").to_pylist(), dtype=object),
        splits=np.asarray(table.column("split").to_pylist(), dtype=object),
        labels=_labels_from_arrow(table.column("label")),
        clusters=table.column("cluster").to_numpy().astype(np.int64),
        confidence=table.column("confidence").to_numpy().astype(np.float32),
    )


def space_index(spaces_dir) -> list[dict]:
    """``spaces.json``: one entry (name, backbone, input size, dim) per space, in params order."""
    path = Path(spaces_dir) / SPACES_INDEX
    if not path.is_file():
        raise DataError(f"{spaces_dir}: {SPACES_INDEX} missing; run the extract_spaces stage")
    return read_json(path)["spaces"]


def read_referees(spaces_dir, ids: np.ndarray) -> dict[str, FeatureTable]:
    """Every referee space's features (``extract.referees``: a sample of the training rows), each checked
    to hold rows of ``ids`` (the extract stage's); none when the index lists none."""
    path = Path(spaces_dir) / SPACES_INDEX
    entries = read_json(path).get("referees", []) if path.is_file() else []
    referees = {}
    for entry in entries:
        table = read_features(Path(spaces_dir) / REFEREES_FOLDER / entry["name"])
        if not np.isin(table.ids, ids).all():
            raise DataError(
                f"{spaces_dir}/{REFEREES_FOLDER}/{entry['name']}: it holds samples the extract stage's features do "
                "not; rerun extract_spaces"
            )
        referees[entry["name"]] = table
    return referees


def read_spaces(spaces_dir, ids: np.ndarray) -> dict[str, FeatureTable]:
    """Every space's features, each checked to hold the rows ``ids`` (the extract stage's) in order."""
    spaces = {}
    for entry in space_index(spaces_dir):
        table = read_features(Path(spaces_dir) / entry["name"])
        if not np.array_equal(table.ids, ids):
            raise DataError(
                f"{spaces_dir}/{entry['name']}: its samples differ from the extract stage's features; "
                "rerun extract_spaces"
            )
        spaces[entry["name"]] = table
    return spaces
