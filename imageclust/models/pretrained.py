"""Frozen pretrained backbones, each with the preprocessing it was trained with; the extract
stage's registry (``features/registry.py``) lists them by name.

A builder takes its params block (``extract.<name>``, its ``Params`` class here) and returns a
``FrozenBackbone``: a module mapping normalised float images (n, channels, size, size) to
(n, output_dim) features, with the input size, channels and normalisation it expects. Weights
come from the library that owns the model and its cache (torchvision's ``TORCH_HOME``, timm and
transformers through the Hugging Face cache, which honour ``HF_HOME`` and ``HF_HUB_OFFLINE``); no
builder ever runs remote code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from ..config import Section
from ..errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_MODELS = {size: f"facebook/dinov2-{size}" for size in ("small", "base", "large", "giant")}


@dataclass
class FrozenBackbone:
    model: nn.Module  # normalised (n, channels, size, size) floats -> (n, output_dim)
    output_dim: int
    input_size: int | None  # the side it was trained at; None keeps the prepared images' size
    channels: int | None  # None: whatever the prepared images have
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    size_multiple: int = 1  # vision transformers take a multiple of their patch size
    info: dict = field(default_factory=dict)  # recorded in the features' metadata


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _cannot_load(key: str, name: str, err: BaseException) -> DataError:
    return DataError(
        f"{key}={name!r}: cannot load the weights ({_first_line(err)}); without a network, "
        "give a local folder or fill the library's cache (HF_HOME, TORCH_HOME) first"
    )


def _output_dim(model: nn.Module, channels: int, size: int) -> int:
    with torch.no_grad():
        return int(model(torch.zeros(1, channels, size, size)).shape[1])


def port_state_dict(source: dict, target: dict, what: str) -> dict:
    """Rename ``source``'s tensors to ``target``'s keys by position, checking every shape: for weights
    saved by another implementation of the same architecture with the same layer order."""
    if len(source) != len(target):
        raise DataError(f"{what}: {len(source)} tensors, the architecture has {len(target)}")
    ported = {}
    for (src_key, tensor), (key, expected) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise DataError(f"{what}: {src_key} has shape {tuple(tensor.shape)}, {key} needs {tuple(expected.shape)}")
        ported[key] = tensor
    return ported


# --- ImageNet classifiers ----------------------------------------------------------------------------


def _drop_last_linear(model: nn.Module) -> int:
    """Replace the last ``nn.Linear`` (the ImageNet classifier) by the identity; return its input width."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise DataError(f"{type(model).__name__}: no linear classifier to remove")
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    width = getattr(parent, child).in_features
    setattr(parent, child, nn.Identity())
    return width


class TorchvisionParams(Section):
    model: str = Field(
        "resnet50",
        description="any name of `torchvision.models.list_models()`: an ImageNet "
        "classifier whose last linear layer is removed (penultimate features)",
    )
    weights: str | None = Field(
        "DEFAULT", description="`DEFAULT`, a weights name of that model (`IMAGENET1K_V2`), or null for random weights"
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from torchvision.models import list_models

        names = list_models()
        if value not in names:
            raise ValueError(f"unknown torchvision model {value!r}; e.g. resnet50, vgg16, convnext_tiny, vit_b_16")
        return value

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, value: str | None, info) -> str | None:
        from torchvision.models import get_model_weights

        model = info.data.get("model")
        if value is None or value == "DEFAULT" or model is None:
            return value
        names = [w.name for w in get_model_weights(model)]
        if value not in names:
            raise ValueError(f"unknown weights {value!r} for {model}; allowed: DEFAULT, null, {', '.join(names)}")
        return value


def torchvision_classifier(params: TorchvisionParams) -> FrozenBackbone:
    """A torchvision ImageNet classifier by name (``resnet50``, ``vgg16``, ``convnext_tiny``, ``vit_b_16``...),
    its penultimate layer as the feature: the input of its last linear layer."""
    from torchvision import models

    weights = None
    if params.weights is not None:
        enum = models.get_model_weights(params.model)
        weights = enum.DEFAULT if params.weights == "DEFAULT" else enum[params.weights]
    try:
        model = models.get_model(params.model, weights=weights)
    except (OSError, RuntimeError) as err:  # a failed download: URLError is an OSError
        raise _cannot_load("extract.torchvision.model", params.model, err) from None
    dim = _drop_last_linear(model)
    transform = weights.transforms() if weights is not None else None
    size = int(transform.crop_size[0]) if transform is not None else 224
    mean = tuple(transform.mean) if transform is not None else IMAGENET_MEAN
    std = tuple(transform.std) if transform is not None else IMAGENET_STD
    return FrozenBackbone(
        model=model,
        output_dim=dim,
        input_size=size,
        channels=3,
        mean=mean,
        std=std,
        info={"model": params.model, "weights": str(weights) if weights else None},
    )


class TimmParams(Section):
    model: str = Field(
        "resnet50.a1_in1k", description="any timm model name: pooled features (`num_classes=0`), timm's own data config"
    )
    pretrained: bool = Field(True, description="load the model's pretrained weights (false: random weights)")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        import timm

        if not timm.is_model(value):
            raise ValueError(f"unknown timm model {value!r} (timm.list_models() lists them)")
        return value


def timm_model(params: TimmParams) -> FrozenBackbone:
    """Any timm model by name, pooled features (``num_classes=0``), with timm's own data config."""
    import timm
    from timm.data import resolve_model_data_config

    try:
        model = timm.create_model(params.model, pretrained=params.pretrained, num_classes=0)
    except (OSError, RuntimeError) as err:
        raise _cannot_load("extract.timm.model", params.model, err) from None
    config = resolve_model_data_config(model)
    return FrozenBackbone(
        model=model,
        output_dim=model.num_features,
        input_size=int(config["input_size"][-1]),
        channels=int(config["input_size"][0]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        info={"model": params.model, "pretrained": params.pretrained},
    )


# --- Hugging Face transformers ----------------------------------------------------------------------


def _hf_normalisation(name: str) -> tuple[tuple, tuple, int | None]:
    """Mean, std and size from the model's image-processor config, if it has one (ImageNet's if not)."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError, KeyError):
        return IMAGENET_MEAN, IMAGENET_STD, None
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
    side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else None
    return (
        tuple(getattr(processor, "image_mean", None) or IMAGENET_MEAN),
        tuple(getattr(processor, "image_std", None) or IMAGENET_STD),
        side,
    )


def _hf_load(loader: Callable, name: str, key: str):
    try:
        return loader(name)
    except (OSError, ValueError) as err:
        raise _cannot_load(key, name, err) from None


class TokenPooling(nn.Module):
    """Features from a transformers vision model's output: its pooler, the CLS token, the mean of the
    patch tokens, or CLS and that mean side by side (DINOv2's linear-evaluation recipe)."""

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        if self.pooling == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise DataError(f"{type(self.model).__name__} has no pooler output; use pooling cls or mean")
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # convolutional models: (n, c, h, w)
            if self.pooling != "mean":
                raise DataError(f"{type(self.model).__name__} has no tokens; use pooling mean or pooler")
            return hidden.mean(dim=(2, 3))
        cls, patches = hidden[:, 0], hidden[:, 1:]
        if self.pooling == "cls":
            return cls
        if self.pooling == "mean":
            return patches.mean(1)
        return torch.cat([cls, patches.mean(1)], dim=1)  # cls_mean


class DinoV2Params(Section):
    model: str = Field(
        "small",
        min_length=1,
        description="`small`, `base`, `large`, `giant` "
        "(`facebook/dinov2-<size>` on the Hugging Face hub), another hub name or a local folder",
    )
    pooling: Literal["cls", "cls_mean"] = Field(
        "cls_mean",
        description="the CLS token, or CLS beside the mean patch token (DINOv2's linear-probe recipe, twice the width)",
    )


def dinov2(params: DinoV2Params) -> FrozenBackbone:
    """DINOv2 (Oquab et al. 2023) through transformers' native ``Dinov2Model``: ``small``, ``base``,
    ``large``, ``giant``, another hub name or a local folder; the CLS token or CLS plus the mean patch
    token. The input side is rounded to a multiple of the patch size (14)."""
    from transformers import Dinov2Model

    name = DINOV2_MODELS.get(params.model, params.model)
    model = _hf_load(Dinov2Model.from_pretrained, name, "extract.dinov2.model")
    mean, std, _ = _hf_normalisation(name)
    wrapped = TokenPooling(model, params.pooling).eval()
    patch = int(model.config.patch_size)
    return FrozenBackbone(
        model=wrapped,
        output_dim=model.config.hidden_size * (2 if params.pooling == "cls_mean" else 1),
        input_size=224,
        channels=int(model.config.num_channels),
        mean=mean,
        std=std,
        size_multiple=patch,
        info={"model": name, "pooling": params.pooling, "patch_size": patch},
    )


class HuggingFaceParams(Section):
    model: str = Field(
        "google/vit-base-patch16-224-in21k",
        min_length=1,
        description="a hub name or local folder of any vision model `AutoModel` builds, never with remote code",
    )
    pooling: Literal["pooler", "cls", "mean", "cls_mean"] = Field("cls", description="`mean` for convolutional models")


def huggingface(params: HuggingFaceParams) -> FrozenBackbone:
    """Any Hugging Face vision model that ``AutoModel`` builds from its config (ViT, DeiT, BEiT, Swin,
    ConvNeXt, ResNet, CLIP's vision tower...), never with remote code; normalisation and size from
    its image-processor config."""
    from transformers import AutoModel

    model = _hf_load(
        lambda n: AutoModel.from_pretrained(n, trust_remote_code=False), params.model, "extract.huggingface.model"
    )
    mean, std, side = _hf_normalisation(params.model)
    config = model.config
    size = int(side or getattr(config, "image_size", None) or 224)
    channels = int(getattr(config, "num_channels", 3))
    wrapped = TokenPooling(model, params.pooling).eval()
    patch = getattr(config, "patch_size", 1)
    multiple = int(patch if isinstance(patch, int) else patch[0])
    return FrozenBackbone(
        model=wrapped,
        output_dim=_output_dim(wrapped, channels, size),
        input_size=size,
        channels=channels,
        mean=mean,
        std=std,
        size_multiple=multiple,
        info={"model": params.model, "pooling": params.pooling, "class": type(model).__name__},
    )
