"""Batched preprocessing on the device: prepared uint8 pixels to what a backbone was trained on."""

from __future__ import annotations

import torch
from torch import nn

from ..runtime import resize_square

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")


# `extract.image_size: auto` never goes below this side: on CIFAR-10's 32-px images scaled up,
# EfficientNet-Lite0 probes alike at 160 and 224 px (0.793 / 0.799; 10-NN 65.6% / 65.2%) at half
# the cost (ONNX Runtime: 394 against 183 images/s), while photos of 224 px and more lost 0.06-0.07
# ACC at 160 against 224 (issue 27). docs/backbones.md has the measurements.
AUTO_MIN_SIDE = 160


def input_side(
    requested: int | str | None, default: int | None, multiple: int, prepared_side: int | None = None
) -> int | None:
    """The side images are resized to: the request, else the backbone's own, rounded to ``multiple``.

    ``auto``: the prepared images' side, at least ``AUTO_MIN_SIDE`` and at most the backbone's own (so
    photos are seen at the side it was trained at, small images not scaled up further than pays);
    the native size where the backbone has no side of its own (the encoder, pixels)."""
    if requested == "auto":
        requested = (
            None if default is None or prepared_side is None else min(default, max(AUTO_MIN_SIDE, prepared_side))
        )
    side = requested or default
    if side is None:
        return None
    return max(multiple, int(round(side / multiple)) * multiple)


class Preprocess(nn.Module):
    """uint8 (n, h, w, c) -> float (n, channels, side, side), normalised with the backbone's mean and std.

    Gray images are repeated to three channels for RGB backbones (colour ones are reduced to luma for
    gray backbones); the shorter side is scaled to ``side`` and the centre square kept. Small images
    are scaled up: ImageNet backbones see 224 px at training. The resize is bilinear, antialiased
    when shrinking, as torchvision's ``Resize``: scaling 32-px JPEGs up five times, bicubic's
    overshoot sharpens their block artefacts (and cost 8 points of k-means ACC on CIFAR-10 through
    EfficientNet-Lite0). On the CPU it runs on the uint8 pixels, PyTorch's vectorised kernel, about
    ten times faster than on floats, so preprocessing costs little beside the model.
    """

    def __init__(self, in_channels: int, out_channels: int | None, side: int | None, mean, std):
        super().__init__()
        self.in_channels, self.out_channels, self.side = in_channels, out_channels or in_channels, side
        mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))  # (x / 255 - mean) / std as one multiply-add
        self.register_buffer("shift", -mean / std)
        self.register_buffer("luma", torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2)  # uint8, channels-last in memory
        if self.side is not None and x.shape[-2:] != (self.side, self.side):
            x = resize_square(x if x.device.type == "cpu" else x.float(), self.side)
        x = x.float()
        if self.in_channels == 1 and self.out_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif self.in_channels == 3 and self.out_channels == 1:
            x = (x * self.luma).sum(1, keepdim=True)
        return x * self.scale + self.shift
