"""Where an extraction keeps its finished shards until every shard is done, so a killed run resumes.

The work folder outlives the stage (``persist: true`` in ``dvc.yaml``): it holds ``run.json`` (the
fingerprint of the run its shards belong to) and the shards finished so far, each renamed into
place only once complete. A run with another fingerprint starts from an empty folder; the last
step moves every shard into the stage's output folder as a whole.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from ..errors import DataError
from ..io import atomic_dir, read_json, write_json
from ..tables import shard_name, write_features_meta

RUN_FILE = "run.json"


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # first row of the prepared data
    stop: int

    @property
    def name(self) -> str:
        return shard_name(self.index)

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_shards(n: int, shard_rows: int) -> list[Shard]:
    return [Shard(i, start, min(n, start + shard_rows)) for i, start in enumerate(range(0, n, shard_rows))]


def assigned(shards: list[Shard], rank: int, world_size: int) -> list[Shard]:
    """A process's share of the shards: every ``world_size``-th one, starting at its rank."""
    return [s for s in shards if s.index % world_size == rank]


class WorkFolder:
    def __init__(self, path: str | Path, run_id: str):
        self.path, self.run_id = Path(path), run_id

    def reset_if_stale(self) -> None:
        """Keep the finished shards of this very run; anything else (another run, a killed writer's
        temporary files) is removed. Only the main process calls this."""
        run_file = self.path / RUN_FILE
        same_run = run_file.is_file() and read_json(run_file).get("run_id") == self.run_id
        if not same_run and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        for leftover in self.path.glob(".*.tmp"):
            leftover.unlink()
        if not same_run:
            write_json(run_file, {"run_id": self.run_id})

    def shard_path(self, shard: Shard) -> Path:
        return self.path / shard.name

    def is_done(self, shard: Shard) -> bool:
        path = self.shard_path(shard)
        return path.is_file() and pq.read_metadata(path).num_rows == shard.rows

    def publish(self, shards: list[Shard], out_dir: str | Path, meta: dict, dim: int, dtype: str) -> None:
        """Move every shard into ``out_dir`` with its ``_meta.json``, swapped into place as one folder."""
        missing = [s.name for s in shards if not self.is_done(s)]
        if missing:
            raise DataError(f"{self.path}: shards {', '.join(missing[:3])} were not written; rerun the extract stage")
        with atomic_dir(out_dir) as tmp:
            for shard in shards:
                os.replace(self.shard_path(shard), tmp / shard.name)
            write_features_meta(tmp, meta, {s.name: s.rows for s in shards}, dim, dtype)
        write_json(self.path / RUN_FILE, {"run_id": self.run_id, "published": str(out_dir)})
