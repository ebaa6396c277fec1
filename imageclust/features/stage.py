"""The extract stage: one vector per prepared sample, written shard by shard into parquet.

At scale: a loader reads contiguous rows of ``images.npy`` in worker processes while the model runs;
each shard is streamed to disk batch by batch (memory holds one batch, whatever the dataset's size);
finished shards survive a kill in the work folder and are skipped on the next run; under
``torchrun`` each process extracts every ``world_size``-th shard, and the first publishes them all.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.prepared import IMAGES_FILE, META_FILE, SAMPLES_FILE, ImageRows, load_prepared
from ..errors import DataError
from ..imports import stage_modules
from ..io import digest_files, fingerprint
from ..models.encoder import EXTRACTOR
from ..progress import progress
from ..runtime import Distributed, init_distributed, resolve_device
from ..tables import FeatureShardWriter
from .embedder import Embedder
from .engines import EngineChoice, default_cache_dir
from .registry import EXTRACTORS
from .shards import Shard, WorkFolder, assigned, plan_shards

log = logging.getLogger(__name__)


class _ShardBatches(Dataset):
    """Item i: (shard index, first row, last row, uint8 pixels) of the i-th batch of the given shards."""

    def __init__(self, images_path: Path, shards: list[Shard], batch_size: int):
        self.rows = ImageRows(images_path)
        self.items = [
            (s.index, start, min(s.stop, start + batch_size))
            for s in shards
            for start in range(s.start, s.stop, batch_size)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        shard, start, stop = self.items[i]
        return shard, start, stop, torch.from_numpy(self.rows.read(start, stop))


NOT_FORK_SAFE = ("onnxruntime", "openvino")  # their thread pools do not survive a fork of the process


def _start_method(workers: int) -> str | None:
    """How loader processes start: forked (PyTorch's default, cheapest) unless this process has loaded
    a runtime that is not fork-safe (the engine measurement, or an earlier run in the same process);
    then from a fork server, which costs one more interpreter start."""
    loaded = any(name in sys.modules for name in NOT_FORK_SAFE)
    return "forkserver" if workers and loaded and "forkserver" in multiprocessing.get_all_start_methods() else None


def _loader(images_path: Path, shards: list[Shard], batch_size: int, workers: int, device) -> DataLoader:
    return DataLoader(
        _ShardBatches(images_path, shards, batch_size),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        multiprocessing_context=_start_method(workers),
    )


def _run_id(prepared_dir: Path, encoder_path, params, device, image_shape, engine: EngineChoice, stage: str) -> str:
    """Shards resume only into the run they belong to: same params, data, encoder, code, device type
    and engine."""
    code = digest_files(stage_modules(stage))  # the files dvc.yaml lists as the stage's code
    data = digest_files([prepared_dir / SAMPLES_FILE, prepared_dir / META_FILE])
    encoder = digest_files([encoder_path]) if params.backbone == EXTRACTOR else None
    return fingerprint(params, code, data, encoder, device.type, list(image_shape), engine.engine, engine.precision)


def _choose_engine(embedder: Embedder, data, batch_size: int, params, engines_dir, ddp) -> EngineChoice:
    """The engine, measured once by the first process on the first batch (the others read its
    choice from ``engines_dir``, so that every process runs the same one)."""
    sample = torch.from_numpy(np.array(data.images[: min(batch_size, len(data.ids))]))
    if not ddp.is_main:
        ddp.barrier()
    choice = embedder.use_engine(sample, params.engine, params.precision, engines_dir, len(data.ids), params.min_cosine)
    if ddp.is_main:
        ddp.barrier()
    return choice


def extract_features(
    prepared_dir,
    encoder_path,
    out_dir,
    work_dir,
    gparams,
    params,
    engines_dir=None,
    stage: str = "extract",
    ddp: Distributed | None = None,
) -> dict | None:
    """Extract ``params.backbone``'s features of every prepared sample into ``out_dir`` (for the
    DVC stage ``stage``, whose code is part of the resume fingerprint). Under ``torchrun`` it joins the
    process group itself, unless the caller passes the one it has joined (and then leaves it open).

    Returns the run's summary in the main process, None in the other ranks of a distributed run.
    """
    prepared_dir = Path(prepared_dir)
    data = load_prepared(prepared_dir)
    owns_group = ddp is None
    ddp = ddp or init_distributed()
    device = resolve_device(gparams.device, ddp.local_rank)
    backbone = EXTRACTORS[params.backbone].build(params.block, encoder_path)
    embedder = Embedder.for_extract(backbone, data.images.shape[1:4], params, device)
    side = embedder.side
    if params.image_size == "auto":
        log.info(
            "extract.image_size auto: %s sees %s px (prepared at %d x %d)",
            params.backbone,
            side or "the native",
            *data.images.shape[1:3],
        )
    batch_size = params.batch_size or (256 if device.type == "cuda" else 32)  # big CPU batches thrash caches
    engine = _choose_engine(embedder, data, batch_size, params, engines_dir or default_cache_dir(), ddp)

    shards = plan_shards(len(data.ids), params.shard_rows)
    work = WorkFolder(work_dir, _run_id(prepared_dir, encoder_path, params, device, data.images.shape, engine, stage))
    if ddp.is_main:
        work.reset_if_stale()
    ddp.barrier()
    mine = assigned(shards, ddp.rank, ddp.world_size)
    todo = [s for s in mine if not work.is_done(s)]
    if len(todo) < len(mine):
        log.info("resuming: %d of %d shards already extracted", len(mine) - len(todo), len(mine))

    channels = embedder.channels
    dim = embedder.output_dim(data.images.shape[1:3])
    rows_done, started = 0, time.perf_counter()
    batches = _loader(prepared_dir / IMAGES_FILE, todo, batch_size, params.num_workers, device)
    where = f" (rank {ddp.rank})" if ddp.world_size > 1 else ""
    bar = progress(total=sum(s.rows for s in todo), desc=f"{stage} {params.backbone}{where}", unit="img")
    with torch.inference_mode(), bar:
        for shard_index, items in itertools.groupby(batches, key=lambda item: item[0]):
            shard = shards[shard_index]
            with FeatureShardWriter(work.shard_path(shard), dim, params.dtype) as writer:
                for _, start, stop, pixels in items:
                    vectors = embedder(pixels)
                    _check_finite(vectors, start, data.ids, params.backbone)
                    writer.write(
                        data.ids[start:stop], data.splits[start:stop], data.labels[start:stop], vectors.cpu().numpy()
                    )
                    bar.update(stop - start)
            rows_done += shard.rows
            if ddp.is_main:
                rate = rows_done / (time.perf_counter() - started)
                left = sum(s.rows for s in todo) - rows_done
                log.info(
                    "shard %s done: %d/%d rows of this process, %.0f images/s, about %.0fs left",
                    shard.name,
                    rows_done,
                    rows_done + left,
                    rate,
                    left / rate,
                )
    seconds = time.perf_counter() - started
    ddp.barrier()
    summary = None
    if ddp.is_main:
        meta = {
            "backbone": params.backbone,
            "dataset": data.meta["name"],
            "classes": data.classes,
            "input_size": side,
            "flip_average": params.flip_average,
            "channels": channels,
            "mean": list(backbone.mean),
            "std": list(backbone.std),
            "engine": engine.engine,
            "precision": engine.precision,
            "calibration": engine.calibration,
            **{f"backbone_{k}": v for k, v in backbone.info.items()},
        }
        work.publish(shards, out_dir, meta, dim, params.dtype)
        summary = {
            "backbone": params.backbone,
            "rows": len(data.ids),
            "dim": int(dim),
            "dtype": params.dtype,
            "input_size": side,
            "shards": len(shards),
            "shards_resumed": len(mine) - len(todo),
            "seconds": round(seconds, 3),
            "world_size": ddp.world_size,
            "device": device.type,
            "images_per_second": round(rows_done * ddp.world_size / seconds, 1) if rows_done else None,
            "engine": engine.to_dict(),
        }
        log.info("extracted %d x %d features in %.1fs", len(data.ids), dim, seconds)
    ddp.barrier()
    if owns_group:
        ddp.close()
    return summary


def _check_finite(vectors: torch.Tensor, start: int, ids, backbone: str) -> None:
    finite = torch.isfinite(vectors).all(1)
    if not finite.all():
        row = int(torch.nonzero(~finite)[0, 0]) + start
        raise DataError(
            f"extract.backbone={backbone!r} produced non-finite features for sample {ids[row]!r} (row {row})"
        )
