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
import pyarrow.parquet as pq

from .errors import DataError
from .io import atomic_dir, atomic_path, write_json

UNLABELED = -1
FEATURE_SHARD_GLOB = "part-*.parquet"


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

    def select(self, mask: np.ndarray) -> "FeatureTable":
        return FeatureTable(self.ids[mask], self.splits[mask], self.labels[mask], self.vectors[mask])


def _feature_batch(ids, splits, labels, vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.table(
        {
            "id": pa.array(np.asarray(ids, dtype=str)),
            "split": pa.array(np.asarray(splits, dtype=str)),
            "label": _labels_to_arrow(labels),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )


def write_features(out_dir: str | Path, table: FeatureTable, meta: dict, shard_rows: int = 100_000) -> None:
    """Write features as parquet shards of ``shard_rows`` rows plus ``meta.json``, atomically as a folder."""
    with atomic_dir(out_dir) as tmp:
        for shard, start in enumerate(range(0, max(len(table), 1), shard_rows)):
            part = table.select(slice(start, start + shard_rows))
            pq.write_table(
                _feature_batch(part.ids, part.splits, part.labels, part.vectors), tmp / f"part-{shard:05d}.parquet"
            )
        write_json(tmp / "meta.json", {**meta, "rows": len(table), "dim": int(table.vectors.shape[1])})


def feature_shards(features_dir: str | Path) -> list[Path]:
    shards = sorted(Path(features_dir).glob(FEATURE_SHARD_GLOB))
    if not shards:
        raise DataError(f"{features_dir}: no feature shards ({FEATURE_SHARD_GLOB}); run the extract stage")
    return shards


def read_features(features_dir: str | Path) -> FeatureTable:
    shards = feature_shards(features_dir)
    table = pa.concat_tables(pq.read_table(s) for s in shards)
    vector = table.column("vector").combine_chunks()
    dim = vector.type.list_size
    vectors = vector.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
    return FeatureTable(
        ids=np.asarray(table.column("id").to_pylist(), dtype=object),
        splits=np.asarray(table.column("split").to_pylist(), dtype=object),
        labels=_labels_from_arrow(table.column("label")),
        vectors=vectors,
    )


@dataclass
class Assignments:
    ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray  # UNLABELED where unknown
    clusters: np.ndarray  # int64 cluster index in [0, k)
    confidence: np.ndarray  # float32 in [0, 1]: how sure the method is of the cluster

    def __len__(self) -> int:
        return len(self.ids)


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
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_assignments(path: str | Path) -> Assignments:
    table = pq.read_table(path)
    return Assignments(
        ids=np.asarray(table.column("id").to_pylist(), dtype=object),
        splits=np.asarray(table.column("split").to_pylist(), dtype=object),
        labels=_labels_from_arrow(table.column("label")),
        clusters=table.column("cluster").to_numpy().astype(np.int64),
        confidence=table.column("confidence").to_numpy().astype(np.float32),
    )
