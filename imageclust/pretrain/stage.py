"""The pretrain stage: train ``pretrain.method`` on the training splits (``loop.py``), or, when
there is nothing to train, write in about no time what the later stages expect."""

from __future__ import annotations

import logging
from pathlib import Path

from ..data.prepared import load_prepared
from ..io import atomic_dir, write_json
from ..models.backbones import build_backbone
from ..models.encoder import EXTRACTOR, backbone_options, save_encoder, save_skipped, training_side
from ..runtime import seed_everything
from .loop import pretrain
from .registry import NO_PRETRAINING

log = logging.getLogger(__name__)


def run(
    prepared_dir,
    encoder_path,
    checkpoint_dir,
    live_dir,
    gparams,
    train_splits: list[str],
    params,
    extract_backbone: str,
) -> dict | None:
    """The stage's work; its summary in the main process, None in the other ranks of a distributed run."""
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)  # a declared output, even with nothing to train
    if extract_backbone != EXTRACTOR:  # a frozen pretrained backbone makes the features: nothing to train
        return skip_pretraining(encoder_path, live_dir, f"extract.backbone={extract_backbone!r} needs no encoder")
    if params.method == NO_PRETRAINING.name:
        return random_encoder(prepared_dir, encoder_path, live_dir, gparams, params)
    return pretrain(prepared_dir, encoder_path, checkpoint_dir, live_dir, gparams, train_splits, params)


def random_encoder(prepared_dir, encoder_path, live_dir, gparams, params) -> dict:
    """``pretrain.method: none`` with ``extract.backbone: encoder``: the backbone at its seeded random
    initialisation, in about no time. Its features are the random-network baseline, and a fine-tuning
    method that trains the encoder (DeepCluster) starts from scratch with it."""
    data = load_prepared(prepared_dir)
    seed_everything(gparams.seed)
    image_size = training_side(params, int(data.images.shape[1]))
    backbone = build_backbone(params.backbone, data.meta["channels"], image_size, **backbone_options(params))
    save_encoder(encoder_path, backbone, params, data.meta["channels"], image_size)
    with atomic_dir(live_dir) as tmp:
        write_json(tmp / "skipped.json", {"reason": "pretrain.method=none: random initialisation"})
    log.info("pretrain.method=none: %s at its random initialisation (seed %d)", params.backbone, gparams.seed)
    return {"method": "none", "random_init": True, "backbone": params.backbone, "epochs": 0}


def skip_pretraining(encoder_path, live_dir, reason: str) -> dict:
    """Outputs of a pretrain stage with nothing to do, in about no time: an encoder file that says
    why it holds no weights (extract refuses it), and no curves. The checkpoints stay, so coming back
    to the trained encoder resumes a finished run instead of training again."""
    save_skipped(encoder_path, reason)
    with atomic_dir(live_dir) as tmp:
        write_json(tmp / "skipped.json", {"reason": reason})
    log.info("pretraining skipped: %s", reason)
    return {"skipped": True, "reason": reason}
