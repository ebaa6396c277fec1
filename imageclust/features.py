"""Feature extraction into parquet shards: one vector per prepared sample, keyed by its id.

Extractors by name. Each is built from the encoder file of the pretrain stage (which it may
ignore) and maps a batch of uint8 (n, h, w, c) pixels to float32 (n, d) vectors.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data import load_prepared
from .errors import DataError
from .io import load_torch
from .models import BACKBONES, build_backbone
from .runtime import autocast, resolve_device, to_float_images
from .tables import FeatureTable, write_features

log = logging.getLogger(__name__)
Extractor = Callable[[np.ndarray], np.ndarray]


def load_encoder(path: str | Path, device: torch.device) -> torch.nn.Module:
    """The backbone the pretrain stage saved, in eval mode on ``device``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: encoder not found; run the pretrain stage")
    state = load_torch(path)
    if state.get("backbone") not in BACKBONES:
        raise DataError(f"{path}: unknown backbone {state.get('backbone')!r}")
    model = build_backbone(state["backbone"], state["in_channels"])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


def pretrained_extractor(encoder_path, device: torch.device) -> Extractor:
    """The backbone trained by the pretrain stage."""
    model = load_encoder(encoder_path, device)

    @torch.no_grad()
    def extract(pixels: np.ndarray) -> np.ndarray:
        with autocast(device):
            return model(to_float_images(pixels, device)).float().cpu().numpy()

    return extract


def pixel_extractor(encoder_path, device: torch.device) -> Extractor:
    """Raw pixels in [0, 1], flattened: the baseline every learned feature must beat."""

    def extract(pixels: np.ndarray) -> np.ndarray:
        return (np.asarray(pixels, dtype=np.float32) / 255.0).reshape(len(pixels), -1)

    return extract


EXTRACTORS: dict[str, Callable[..., Extractor]] = {
    "pretrained": pretrained_extractor,
    "pixels": pixel_extractor,
}


def extract_features(prepared_dir, encoder_path, out_dir, gparams, params) -> dict:
    data = load_prepared(prepared_dir)
    device = resolve_device(gparams.device)
    extractor = EXTRACTORS[params.backbone](encoder_path, device)
    started = time.perf_counter()
    chunks = [
        extractor(data.images[start : start + params.batch_size])
        for start in range(0, len(data.ids), params.batch_size)
    ]
    vectors = np.concatenate(chunks).astype(np.float32)
    if not np.isfinite(vectors).all():
        raise DataError(f"extract.backbone={params.backbone!r} produced non-finite features")
    seconds = time.perf_counter() - started
    table = FeatureTable(ids=data.ids, splits=data.splits, labels=data.labels, vectors=vectors)
    meta = {"backbone": params.backbone, "dataset": data.meta["name"], "classes": data.classes}
    write_features(out_dir, table, meta)
    log.info("extracted %d x %d features in %.1fs", *vectors.shape, seconds)
    return {"backbone": params.backbone, "rows": len(vectors), "dim": int(vectors.shape[1])}
