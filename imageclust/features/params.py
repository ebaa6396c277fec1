"""The ``extract`` section of params.yaml: the keys every backbone shares and one block per
registered extractor (``extract.dinov2``, ``extract.torchvision``, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import Int, Section, one_of, with_blocks
from ..models.encoder import EXTRACTOR
from .registry import EXTRACTORS


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
    image_size: Int | None = Field(
        None,
        ge=8,
        le=1024,
        description="side the backbone sees: shorter side scaled "
        "(bilinear), centre square; null: the backbone's own (224 for ImageNet models "
        "and DINOv2, the native size for `encoder` and `pixels`); rounded to a multiple "
        "of a ViT's patch size",
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
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="the engine's arithmetic on a CPU: `bf16` where the CPU has bfloat16 instructions (AVX-512 "
        "BF16, AMX); `auto` tries both and keeps bf16 only when its features agree with FP32",
    )
    num_workers: Int = Field(
        1, ge=0, description="loader processes reading the next batches while the model runs (0: in the main process)"
    )

    @property
    def block(self):
        """The chosen backbone's own block."""
        return getattr(self, self.backbone)


ExtractParams = with_blocks("ExtractParams", ExtractShared, EXTRACTORS, "the knobs of")
