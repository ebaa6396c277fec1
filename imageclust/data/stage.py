"""The download stage: stream the dataset ``data.name`` names into the canonical prepared form
(``prepared.py``), decoding on several threads, counting the files it skips and why."""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import DataError
from ..io import atomic_dir
from ..progress import progress
from .images import SkipSample, to_canonical
from .prepared import PreparedWriter, preparation_key
from .registry import DATASETS
from .source import Source, log_skip, select_samples, target_shape

log = logging.getLogger(__name__)
DECODE_THREADS = min(8, os.cpu_count() or 1)
DECODE_CHUNK = 1024


def prepare(params, seed: int, out_dir) -> dict:
    """Materialise the dataset ``params.name`` into ``out_dir`` in the canonical form; return its meta."""
    started = time.perf_counter()
    source = DATASETS[params.name](params, seed)
    try:
        indices = select_samples(source, params.splits, params.max_per_split, seed)
        shape = target_shape(source, indices, params.image_size, params.channels)
        native = source.sizes is not None and bool((source.sizes[indices] == shape[:2]).all())
        log.info("%s: preparing %d samples as %dx%dx%d", source.name, len(indices), *shape)
        meta = _stream(source, indices, shape, None if native else shape[0], out_dir,
                       preparation_key(params, seed))
    finally:
        source.cleanup()
    log.info("prepared %d samples in %.1fs; skipped %s", meta["num_samples"], time.perf_counter() - started,
             meta["skipped"] or "none")
    return meta


def _convert(source: Source, resize_to: int | None, shape: tuple[int, int, int], i: int):
    """(pixels, None) for a usable sample i, (None, reason) for one to skip."""
    try:
        pixels = to_canonical(source.read(i), resize_to, shape[2])
    except SkipSample as skip:
        return None, str(skip)
    if pixels.shape != shape:  # the file disagrees with its header
        return None, "size differs from its header"
    return pixels, None


def _stream(source: Source, indices: np.ndarray, shape, resize_to: int | None, out_dir, prepared_with: str) -> dict:
    """Decode ``indices`` of ``source`` into a fresh prepared folder; skipped samples are counted."""
    convert = functools.partial(_convert, source, resize_to, tuple(shape))
    # Pillow releases the GIL while decoding, so threads decode in parallel; chunks keep the order
    # (and so the output) deterministic and the memory bounded.
    with atomic_dir(out_dir) as tmp, ThreadPoolExecutor(DECODE_THREADS) as pool:
        writer = PreparedWriter(tmp, len(indices), shape)
        with progress(total=len(indices), desc=f"download {source.name}: decode", unit="img") as bar:
            for start in range(0, len(indices), DECODE_CHUNK):
                chunk = indices[start : start + DECODE_CHUNK]
                for i, (pixels, reason) in zip(chunk, pool.map(convert, chunk)):
                    if reason is None:
                        writer.add(pixels, source.ids[i], source.splits[i], source.labels[i])
                    else:
                        log_skip(source.ids[i], reason, source.skipped)
                bar.update(len(chunk))
                bar.set_postfix(skipped=sum(source.skipped.values()), refresh=False)
        if not writer.ids:
            raise DataError(f"{source.name}: no usable images (skipped: {dict(source.skipped)})")
        return writer.finish(source.name, source.classes, source.skipped, source.notes, prepared_with)
