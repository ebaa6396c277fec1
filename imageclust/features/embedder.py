"""A frozen backbone behind its preprocessing, on a device: the one way the extract stage and
``predict`` turn pixels into features, so new images get the same features as the run's."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.pretrained import FrozenBackbone
from .engines import MIN_COSINE, EngineChoice, Runner, choose_engine, torch_runner
from .preprocess import Preprocess, input_side


class Embedder:
    """uint8 (n, h, w, c) pixels -> float vectors: preprocessing (resize, channels, normalisation) on
    the device, then the backbone through an inference engine (``use_engine``; PyTorch FP32 until then).
    With ``flip_average`` each vector is the mean of the image's and its left-right mirror's."""

    def __init__(
        self,
        backbone: FrozenBackbone,
        prepared_shape: tuple[int, int, int],
        image_size: int | str | None,
        device: torch.device,
        flip_average: bool = False,
    ):
        """``prepared_shape``: (height, width, channels) of the prepared images; ``image_size``:
        ``extract.image_size`` (``auto`` reads the prepared side); ``flip_average``: ``extract.flip_average``."""
        self.backbone, self.device, self.flip_average = backbone, device, flip_average
        height, width, in_channels = prepared_shape
        self.side = input_side(image_size, backbone.input_size, backbone.size_multiple, min(height, width))
        self.channels = backbone.channels or in_channels
        self.preprocess = Preprocess(in_channels, backbone.channels, self.side, backbone.mean, backbone.std).to(device)
        self.run: Runner = torch_runner(backbone.model, "fp32", device)
        self.engine = EngineChoice(reason="PyTorch FP32")

    @classmethod
    def for_extract(cls, backbone: FrozenBackbone, prepared_shape, extract, device: torch.device) -> Embedder:
        """The embedder an ``extract`` section (or one space's spec of it) asks for: its ``image_size`` and
        ``flip_average``, so the stage, the referees and ``predict`` cannot read them differently."""
        shape = tuple(int(n) for n in prepared_shape)
        return cls(backbone, shape, extract.image_size, device, extract.flip_average)

    def output_dim(self, image_hw: tuple[int, int]) -> int:
        if self.backbone.output_dim > 0:
            return self.backbone.output_dim
        height, width = (self.side, self.side) if self.side else image_hw
        return self.channels * height * width  # pixels

    def use_engine(
        self,
        sample_pixels: torch.Tensor,
        engine: str,
        precision: str,
        cache_dir: Path | None,
        total_rows: int,
        min_cosine: float = MIN_COSINE,
        calibration: str | None = None,
    ) -> EngineChoice:
        """Run the backbone through ``engine`` in ``precision`` (``auto``: measured on ``sample_pixels``,
        one batch of the data; see ``engines.py``) from now on."""
        with torch.no_grad():  # not inference mode: exporters trace the sample
            sample = self.preprocess(sample_pixels.to(self.device))
        self.run, self.engine = choose_engine(
            self.backbone.model, sample, engine, precision, cache_dir, self.device, total_rows, min_cosine, calibration
        )
        return self.engine

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(pixels.to(self.device, non_blocking=True))
        if not self.flip_average:
            return self.run(x)
        return (self.run(x) + self.run(x.flip(-1))) / 2
