"""Every feature extractor by name (``extract.backbone``): the pretrain stage's ``encoder``, raw
``pixels``, and the frozen pretrained backbones of ``models/pretrained.py``. An extractor builds a
``FrozenBackbone`` from its params block (``extract.<name>``) and the encoder file; a new one is a
builder plus one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..config import NoParams, Section
from ..models import pretrained
from ..models.efficientnet_lite import efficientnet_lite
from ..models.encoder import EXTRACTOR, load_encoder
from ..models.pretrained import FrozenBackbone


@dataclass(frozen=True)
class Extractor:
    name: str
    build: Callable[[Section, Path], FrozenBackbone]  # (its params block, the pretrain stage's encoder file)
    params: type[Section] = NoParams


def encoder_backbone(params, encoder_path) -> FrozenBackbone:
    """The backbone trained by the pretrain stage; it normalises its [0, 1] input itself."""
    model, header = load_encoder(encoder_path)
    return FrozenBackbone(
        model=model,
        output_dim=int(header["output_dim"]),
        input_size=header.get("input_side"),  # pretrain.image_size: resized to the side it trained at
        channels=int(header["in_channels"]),
        info={"model": header["backbone"]},
    )


def pixel_backbone(params, encoder_path) -> FrozenBackbone:
    """Raw pixels in [0, 1], flattened channel-first: the baseline every learned feature must beat."""
    return FrozenBackbone(model=nn.Flatten(), output_dim=-1, input_size=None, channels=None)


def frozen(build: Callable[[Section], FrozenBackbone]) -> Callable[[Section, Path], FrozenBackbone]:
    """A pretrained backbone's builder, which reads no encoder file."""

    def build_frozen(params, encoder_path) -> FrozenBackbone:
        return build(params)

    build_frozen.__doc__ = build.__doc__
    return build_frozen


EXTRACTORS: dict[str, Extractor] = {
    extractor.name: extractor
    for extractor in (
        Extractor(EXTRACTOR, encoder_backbone),
        Extractor("pixels", pixel_backbone),
        *(Extractor(f"efficientnet_lite{v}", frozen(efficientnet_lite(v))) for v in (0, 1, 2)),
        Extractor("torchvision", frozen(pretrained.torchvision_classifier), pretrained.TorchvisionParams),
        Extractor("timm", frozen(pretrained.timm_model), pretrained.TimmParams),
        Extractor("dinov2", frozen(pretrained.dinov2), pretrained.DinoV2Params),
        Extractor("huggingface", frozen(pretrained.huggingface), pretrained.HuggingFaceParams),
    )
}
