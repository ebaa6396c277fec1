"""The ``extract`` section of params.yaml: the keys every backbone shares and one block per
registered extractor (``extract.dinov2``, ``extract.torchvision``, ...)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from ..config import Int, Section, one_of, with_blocks
from ..models.encoder import EXTRACTOR
from ..tables import REFEREES_FOLDER
from .registry import EXTRACTORS


def _pretrained(name: str) -> str:
    if name == EXTRACTOR:
        raise ValueError(
            "the pretrain stage's encoder can only be extract.backbone: put it there and the pretrained backbone here"
        )
    return name


def _side(value):
    """An ``image_size``: null, `auto`, or an integer side of 8 to 1024 px."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be null, 'auto' or an integer side in pixels")
    if not 8 <= value <= 1024:
        raise ValueError("must be between 8 and 1024 px")
    return value


# `extract.image_size` and each space's: one message for a bad value, not pydantic's per union member.
ImageSide = Annotated[Int | Literal["auto"] | None, BeforeValidator(_side)]


class SpaceParams(Section):
    """An item of ``extract.spaces`` (one more representation space) or of ``extract.referees``."""

    backbone: one_of(lambda: EXTRACTORS, "feature extractor") = Field(
        description="a frozen backbone (not `encoder`: the pretrain stage trains only for extract.backbone)"
    )
    image_size: ImageSide = Field(
        None, description="the side it sees (8-1024); null: its own; `auto`: as extract.image_size's"
    )
    name: str | None = Field(
        None, description="the space's folder and label; null: `<backbone>_<image_size>` (or `_native`)"
    )
    options: dict = Field(
        default_factory=dict, description="the backbone's own keys, as its block `extract.<backbone>` takes them"
    )

    @field_validator("backbone")
    @classmethod
    def _not_the_encoder(cls, value: str) -> str:
        return _pretrained(value)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("must be a folder name: letters, digits, `_`, `.` and `-`")
        return value

    @model_validator(mode="after")
    def _options_fit_the_backbone(self) -> SpaceParams:
        try:
            self.block  # noqa: B018 (validates the options as the backbone's block)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"options.{where} of {self.backbone}: {first['msg']}") from None
        return self

    @property
    def block(self) -> Section:
        return EXTRACTORS[self.backbone].params(**self.options)

    @property
    def label(self) -> str:
        return self.name or f"{self.backbone}_{self.image_size or 'native'}"


class ExtractShared(Section):
    """``extract``: one feature vector per prepared sample."""

    key = "extract"
    backbone: one_of(lambda: EXTRACTORS, "feature extractor") = Field(
        EXTRACTOR,
        description="where the features come from: the pretrain stage's `encoder`, raw `pixels`, or a "
        "frozen pretrained backbone (docs/backbones.md)",
    )
    batch_size: Int | None = Field(
        None,
        ge=1,
        description="null: 256 on a GPU, 32 on a CPU (large batches thrash "
        "a CPU's caches: EfficientNet-Lite0 at 160 px runs 2-3x slower at 256 than at 32)",
    )
    image_size: ImageSide = Field(
        None,
        description="side the backbone sees (8-1024): shorter side scaled "
        "(bilinear), centre square; null: the backbone's own (224 for ImageNet models "
        "and DINOv2, the native size for `encoder` and `pixels`); `auto`: the prepared images' side, "
        "at least 160 and at most the backbone's own (docs/backbones.md); rounded to a multiple "
        "of a ViT's patch size",
    )
    flip_average: bool = Field(
        False,
        description="each image's features averaged with its left-right mirror's, for over twice the extraction "
        "time: a photo's class survives a mirror, a digit's or a letter's does not. On CIFAR-10 through "
        "EfficientNet-Lite2 at 160 px the linear probe rises from 0.822 to 0.829 but the clusterings barely move "
        "(k-means +0.004, TURTLE +0.002; docs/results.md), so no preset uses it. Applies to extract.spaces and "
        "extract.referees too",
    )
    dtype: Literal["float32", "float16"] = Field(
        "float32", description="how the vectors are stored (float16 halves the disk; readers return float32)"
    )
    shard_rows: Int = Field(
        10_000, ge=1, description="rows per parquet shard: the unit of resuming and of the work split between processes"
    )
    engine: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto",
        description="how the backbone runs on a CPU: `auto` measures PyTorch, ONNX Runtime and OpenVINO on a "
        "batch of the data and keeps the fastest whose features agree with PyTorch FP32 (cosine >= 0.999); "
        "the choice and the exported graphs are kept in this machine's cache (`~/.cache/imageclust/engines`), "
        "so reruns repeat it. A missing package is left out with a log line. On CUDA: PyTorch with mixed "
        "precision (docs/backbones.md)",
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="the engine's arithmetic on a CPU: `bf16` where the CPU has bfloat16 instructions (AVX-512 "
        "BF16, AMX; PyTorch, OpenVINO); `int8` quantised after training, calibrated on the first batch "
        "(ONNX Runtime, OpenVINO; tried by `auto` when FP32 would take over a minute); `auto` keeps a lower "
        "precision only when its features agree with FP32 (extract.min_cosine)",
    )
    min_cosine: float = Field(
        0.999,
        ge=0,
        le=1,
        description="the guard of `auto`: a faster engine or lower precision is kept only when the lowest cosine "
        "of its features to PyTorch FP32 over the sample batch is at least this. On photos bf16 reaches "
        "about 0.98 and int8 about 0.93, and CIFAR-10's k-means ACC moves by under 0.003 with either "
        "(docs/results.md): 0.9 lets them through",
    )
    num_workers: Int = Field(
        1, ge=0, description="loader processes reading the next batches while the model runs (0: in the main process)"
    )

    spaces: list[SpaceParams] = Field(
        default_factory=list,
        description="more representation spaces beside the backbone's, each `{backbone, image_size, name, "
        "options}` (a frozen backbone, not `encoder`); TURTLE fits one head per space, the other methods use "
        "the backbone's features (docs/backbones.md)",
    )

    referees: list[SpaceParams] = Field(
        default_factory=list,
        description="spaces in which `finetune.method: auto` judges its candidates instead of the spaces they were "
        "fitted in, by the mean of their scores; each `{backbone, image_size, name, options}`, embedded for a "
        "fixed sample of 3,000 training rows only. E.g. `[{backbone: efficientnet_lite2, image_size: 160}, "
        '{backbone: efficientnet_lite0, image_size: 224}]` (docs/results.md, "Judging in spaces the '
        'candidates were not fitted in")',
    )

    @field_validator("spaces", "referees")
    @classmethod
    def _unique_names(cls, spaces: list[SpaceParams]) -> list[SpaceParams]:
        labels = [space.label for space in spaces]
        twice = next((label for label in labels if labels.count(label) > 1), None)
        if twice is not None:
            raise ValueError(f"two spaces are named {twice!r}; give each its own `name`")
        if REFEREES_FOLDER in labels:
            raise ValueError(f"{REFEREES_FOLDER!r} is the referees' folder; give the space another `name`")
        return spaces

    @property
    def block(self):
        """The chosen backbone's own block."""
        return getattr(self, self.backbone)

    def for_space(self, space: SpaceParams):
        """These params as they extract ``space``: its backbone, side and options; the shared keys kept."""
        return self.model_copy(
            update={"backbone": space.backbone, "image_size": space.image_size, space.backbone: space.block}
        )


ExtractParams = with_blocks("ExtractParams", ExtractShared, EXTRACTORS, "the knobs of")
