"""Referee spaces (``extract.referees``): frozen backbones in which ``finetune.method: auto`` judges its
candidates and which none of them was fitted in.

Each score favours the method that optimises something like it in the space it judges: judged in the
features they were fitted in, TURTLE's and SCAN's clusterings were each picked where they were 0.13-0.14
ACC below the best candidate. Judged by nearest neighbours in EfficientNet-Lite2 at 160 px and Lite0 at
224 px, averaged, the mean regret over 12 draws of digits and CIFAR-10 fell from 0.036 to 0.012 and the
worst from 0.139 to 0.072 (``benchmarks/referee_space.py``, docs/results.md).

The judge looks at no more than ``REFEREE_ROWS`` training rows (``finetune.guard.Referee``'s sample
size), so only that many, drawn with a fixed seed from the rows of ``data.train_splits``, are embedded:
the cost does not grow with the data (on CIFAR-10 through ONNX Runtime on 2 cores: 41 s for the first
space above, 24 s for the second).
The draw is the data's, not the run's (no ``seed``), so a seed sweep reuses it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..data.prepared import PreparedData
from ..errors import DataError
from ..models.pretrained import FrozenBackbone
from ..tables import FeatureShardWriter, shard_name, write_features_meta
from .embedder import Embedder
from .registry import EXTRACTORS

log = logging.getLogger(__name__)
REFEREE_ROWS = 3000  # as many as finetune.guard.Referee judges
REFEREE_SEED = 0


def referee_rows(data: PreparedData, train_splits: list[str], size: int | None = None) -> np.ndarray:
    """The rows of the prepared data that the referees embed: ``size`` (``REFEREE_ROWS``) training rows
    drawn with a fixed seed (all of them when there are no more), in the prepared order."""
    size = REFEREE_ROWS if size is None else size
    try:
        train = data.indices(train_splits)
    except DataError as err:
        raise DataError(f"extract.referees: data.train_splits: {err}") from None
    if len(train) == 0:
        raise DataError(f"extract.referees: no prepared samples in data.train_splits={train_splits}")
    if len(train) <= size:
        return train
    return np.sort(np.random.default_rng(REFEREE_SEED).choice(train, size, replace=False))


def embed_rows(embedder: Embedder, data: PreparedData, rows: np.ndarray, batch_size: int, label: str) -> np.ndarray:
    """The features of ``rows`` of the prepared images, batch by batch."""
    out = []
    for start in range(0, len(rows), batch_size):
        pixels = torch.from_numpy(np.ascontiguousarray(data.images[rows[start : start + batch_size]]))
        vectors = embedder(pixels)
        if not torch.isfinite(vectors).all():
            bad = rows[start + int(torch.nonzero(~torch.isfinite(vectors).all(1))[0, 0])]
            raise DataError(f"extract.referees: {label!r} produced non-finite features for sample {data.ids[bad]!r}")
        out.append(vectors.float().cpu().numpy())
    return np.concatenate(out)


def extract_referee(
    data: PreparedData, rows: np.ndarray, space, params, out_dir: Path, device, engines_dir, batch_size: int
) -> dict:
    """One referee space of ``rows``, written as a features folder (one shard) into ``out_dir``."""
    started = time.perf_counter()
    spec = params.for_space(space)
    backbone: FrozenBackbone = EXTRACTORS[spec.backbone].build(spec.block, None)
    embedder = Embedder.for_extract(backbone, data.images.shape[1:4], spec, device)
    sample = torch.from_numpy(np.ascontiguousarray(data.images[rows[:batch_size]]))
    engine = embedder.use_engine(sample, spec.engine, spec.precision, engines_dir, len(rows), spec.min_cosine)
    vectors = embed_rows(embedder, data, rows, batch_size, space.label)
    out_dir.mkdir(parents=True)
    shard = shard_name(0)
    with FeatureShardWriter(out_dir / shard, vectors.shape[1], spec.dtype) as writer:
        writer.write(data.ids[rows], data.splits[rows], data.labels[rows], vectors)
    meta = {
        "backbone": spec.backbone,
        "dataset": data.meta["name"],
        "classes": data.classes,
        "input_size": embedder.side,
        "flip_average": spec.flip_average,
        "channels": embedder.channels,
        "engine": engine.engine,
        "precision": engine.precision,
        "referee_rows": len(rows),
    }
    write_features_meta(out_dir, meta, {shard: len(rows)}, vectors.shape[1], spec.dtype)
    seconds = time.perf_counter() - started
    log.info("referee %r: %d rows x %d in %.1fs (%s)", space.label, len(rows), vectors.shape[1], seconds, engine.reason)
    return {
        "name": space.label,
        "backbone": spec.backbone,
        "input_size": embedder.side,
        "dim": int(vectors.shape[1]),
        "rows": len(rows),
        "seconds": round(seconds, 3),
        "engine": engine.engine,
        "precision": engine.precision,
    }


def extract_referees(data: PreparedData, rows: np.ndarray, out_dir: Path, params, device, engines_dir) -> list[dict]:
    """Every referee of ``params.referees`` of ``rows`` (``referee_rows``) into ``out_dir/<name>/``; their
    index entries."""
    batch_size = params.batch_size or (256 if device.type == "cuda" else 32)
    return [
        extract_referee(data, rows, space, params, Path(out_dir) / space.label, device, engines_dir, batch_size)
        for space in params.referees
    ]
