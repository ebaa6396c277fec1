"""The ``pretrain`` section of params.yaml: the keys every method shares (the backbone, the
optimisation, the augmentations) and one block per registered method (``pretrain.simclr``, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..augment import AugmentParams
from ..config import Int, Section, one_of, with_blocks
from ..models.backbones import BACKBONES, WIDTHS_TAKEN
from .registry import METHODS


class EarlyStoppingParams(Section):
    patience: Int | None = Field(
        None,
        ge=1,
        description="stop once this many epochs have not lowered the best "
        "loss by `min_delta`; a rerun keeps the stopped run; null: train every epoch",
    )
    min_delta: float = Field(0.0, ge=0, description="the loss improvement that counts")


class PretrainShared(Section):
    """``pretrain``: self-supervised training of a backbone on the training splits."""

    key = "pretrain"
    method: one_of(lambda: METHODS, "pretrain method") = Field(
        "simclr",
        description="self-supervised method (`imageclust/pretrain/`); `none` trains nothing: with a "
        "pretrained `extract.backbone` nothing is written, with `encoder` the backbone at its random initialisation",
    )
    backbone: one_of(lambda: BACKBONES, "backbone") = Field(
        "small_cnn",
        description="`small_cnn`: 6 conv layers for 8-32 px; `mlp`: two 512-wide layers on the "
        "flattened pixels; ResNets from torchvision; `resnet32`: He et al.'s CIFAR ResNet-32 (64-d); `vgg16` (with "
        "batch norm) and `alexnet`: DeepCluster's, their convolutions and global pooling (`imageclust/models/"
        "backbones.py`)",
    )
    augment: AugmentParams = Field(
        default_factory=AugmentParams,
        description="the two views' augmentation: a preset and the strengths that replace its own",
    )
    image_size: Int | None = Field(
        None,
        ge=4,
        le=1024,
        description="the side the encoder is trained at and sees after (the extract stage and `predict` resize "
        "to it as they do for pretrained backbones); null: the prepared images' (`data.image_size`). Lets "
        "the prepared images keep a finer side for `extract.spaces` (28 px Fashion-MNIST for an ImageNet "
        "backbone) while the encoder trains fast at 16",
    )
    epochs: Int = Field(100, ge=0, description="0 keeps the random initialisation")
    batch_size: Int = Field(256, ge=2, description="global batch (split across DDP processes)")
    lr: float = Field(1e-3, gt=0, description="learning rate for a batch of 256, scaled linearly with the batch")
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty on the weights (decoupled for AdamW)")
    warmup_epochs: Int = Field(5, ge=0, description="linear warmup before the schedule")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description="the learning rate after the warmup: cosine decay to 0, or constant (an ablation's baseline)",
    )
    optimizer: Literal["adamw", "adam", "sgd", "lars"] = Field(
        "adamw",
        description="`lars`: You et al. 2017, SimCLR's for large batches (biases and norms neither decayed "
        "nor adapted)",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of `sgd` and `lars`")
    accumulate_steps: Int = Field(
        1,
        ge=1,
        description="batches whose gradients add up before each update (the "
        "learning rate scales with the batch times this); the negatives stay those of "
        "each batch",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="mixed precision: `auto` is bfloat16 on CUDA devices that have it, else float16 with a "
        "gradient scaler (kept in the checkpoint), and full precision on the CPU; on CUDA the network and images "
        "are also channels-last",
    )
    early_stopping: EarlyStoppingParams = Field(
        default_factory=EarlyStoppingParams, description="stop when the loss stops falling"
    )
    stem: Literal["cifar", "imagenet"] = Field(
        "cifar",
        description="ResNets' first layers: 3x3 stride 1 without "
        "max-pool (small images), or 7x7 stride 2 with max-pool",
    )
    sobel: bool = Field(
        False, description="a fixed grayscale + Sobel filter in front of the backbone (DeepCluster's input)"
    )
    freeze_bn: bool = Field(False, description="batch norm keeps its statistics and weights fixed while training")
    widths: list[Int] | None = Field(
        None,
        min_length=1,
        description="`small_cnn`: channels of its three stages (its own: `[32, 64, 128]`; "
        "`[16, 32, 64]` trains about 3x faster at 28 px); `resnet32`: its three stages (its own: `[16, 32, 64]`; "
        "`[32, 64, 128]` has 4x the weights); `mlp`: hidden widths (`[512, 512]`); the other backbones have fixed "
        "widths and refuse it",
    )
    projection_dims: list[Int] = Field(
        default_factory=lambda: [128, 64],
        min_length=1,
        description="the projection MLP after the backbone: a "
        "linear layer, batch norm and ReLU per hidden width, then a linear layer to the last width (e.g. "
        "`[2048, 512, 128]`)",
    )
    checkpoint_every: Int = Field(10, ge=1, description="epochs between checkpoints (and after the last)")

    @field_validator("projection_dims", "widths")
    @classmethod
    def _widths(cls, value):
        if value is not None and any(w < 1 for w in value):
            raise ValueError("every width must be >= 1")
        return value

    @model_validator(mode="after")
    def _widths_apply(self):
        if self.widths is not None and self.backbone not in WIDTHS_TAKEN:
            raise ValueError(
                f"widths={self.widths} is invalid: backbone {self.backbone!r} has fixed widths; "
                f"widths apply to {', '.join(sorted(WIDTHS_TAKEN))} (or set widths: null)"
            )
        if self.backbone == "resnet32" and self.widths is not None and len(self.widths) != 3:
            raise ValueError(f"widths={self.widths} is invalid: resnet32 has three stages, so three widths")
        return self

    @property
    def block(self):
        """The chosen method's own block."""
        return getattr(self, self.method)


PretrainParams = with_blocks("PretrainParams", PretrainShared, METHODS, "the knobs of")
