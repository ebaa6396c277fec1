"""A frozen backbone behind its preprocessing, on a device: the one way the extract stage and
``predict`` turn pixels into features, so new images get the same features as the run's."""

from __future__ import annotations

import torch
from torch import nn

from ..models.pretrained import FrozenBackbone
from ..runtime import autocast
from .preprocess import Preprocess, input_side


class Embedder:
    """A frozen backbone behind its preprocessing, on a device: uint8 (n, h, w, c) pixels -> float vectors.
    The extract stage and ``predict`` both embed through it, so new images get the same features."""

    def __init__(self, backbone: FrozenBackbone, in_channels: int, image_size: int | None, device: torch.device):
        self.backbone, self.device = backbone, device
        self.side = input_side(image_size, backbone.input_size, backbone.size_multiple)
        self.channels = backbone.channels or in_channels
        self.preprocess = Preprocess(in_channels, backbone.channels, self.side, backbone.mean, backbone.std).to(device)
        self.model = backbone.model.to(device).eval()
        # channels-last runs convolutions (depthwise ones above all) about twice as fast, on CPUs too
        self.channels_last = any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def output_dim(self, image_hw: tuple[int, int]) -> int:
        if self.backbone.output_dim > 0:
            return self.backbone.output_dim
        height, width = (self.side, self.side) if self.side else image_hw
        return self.channels * height * width  # pixels

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(pixels.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            return self.model(x).float()
