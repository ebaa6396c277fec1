"""The encoder file: the backbone the pretrain stage trains (and DeepCluster, spectral fine-tuning
or SCAN with ``train_backbone`` train further), saved with what it takes to rebuild it, and read
back by the extract and finetune stages and by ``predict``."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import DataError
from ..io import load_torch, save_torch
from .backbones import BACKBONES, build_backbone

EXTRACTOR = "encoder"  # the extract.backbone whose features come from this file


def backbone_options(params) -> dict:
    """The options of ``pretrain`` params that shape the backbone (``build_backbone``)."""
    return {"stem": params.stem, "sobel": params.sobel, "freeze_bn": params.freeze_bn, "widths": params.widths}


def training_side(params, prepared_side: int) -> int:
    """The side the encoder of ``pretrain`` params trains at: ``pretrain.image_size``, else the prepared images'."""
    return params.image_size or prepared_side


def save_encoder(path, backbone, params, channels: int, image_size: int) -> None:
    """The backbone of ``pretrain`` params ``params`` with what it takes to rebuild it. ``input_side``
    (``pretrain.image_size``) is the side images are resized to before it; absent, it takes them as prepared."""
    save_torch(
        path,
        {
            "backbone": params.backbone,
            "in_channels": channels,
            "image_size": image_size,
            "input_side": params.image_size,
            "options": backbone_options(params),
            "output_dim": backbone.output_dim,
            "state_dict": backbone.state_dict(),
        },
    )


def save_skipped(path, reason: str) -> None:
    """An encoder file that holds no weights and says why (``load_encoder`` refuses it)."""
    save_torch(path, {"backbone": None, "skipped": reason})


def save_trained_encoder(path, model: nn.Module, source_path) -> None:
    """A further-trained encoder in the format of the file it started from, so that it rebuilds the same way."""
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    save_torch(path, {**encoder_header(source_path), "state_dict": weights, "finetuned": True})


def encoder_header(path: str | Path) -> dict:
    """What the encoder file says besides its weights."""
    return {k: v for k, v in load_torch(path).items() if k != "state_dict"}


def load_encoder(path: str | Path) -> tuple[nn.Module, dict]:
    """The saved backbone, in eval mode on the CPU, and the file's header."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: encoder not found; run the pretrain stage")
    state = load_torch(path)
    if state.get("skipped"):
        raise DataError(
            f"{path}: pretraining was skipped ({state['skipped']}); rerun the pretrain stage "
            f"with extract.backbone={EXTRACTOR}"
        )
    if state.get("backbone") not in BACKBONES:
        raise DataError(f"{path}: unknown backbone {state.get('backbone')!r}")
    model = build_backbone(
        state["backbone"], state["in_channels"], state.get("image_size", 32), **state.get("options", {})
    )
    model.load_state_dict(state.pop("state_dict"))
    return model.eval(), state
