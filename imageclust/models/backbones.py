"""Trainable backbones by name. Each takes the number of input channels and returns a module
mapping (batch, channels, height, width) floats in [0, 1] to (batch, ``output_dim``) features."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """Maps [0, 1] pixels to roughly zero mean, unit range, so backbones see centred inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.5


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Three stages of two 3x3 convolutions, max-pooling between them, global average pooling.

    Sized for small images (8x8 digits to 32x32 CIFAR): cheap enough to pretrain on a laptop CPU.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = [Normalize()]
        c = in_channels
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            layers += _conv_block(c, w) + _conv_block(w, w)
            c = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.output_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CifarResNet18(nn.Module):
    """torchvision's ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max-pool), as in
    SimCLR's and SCAN's CIFAR experiments."""

    def __init__(self, in_channels: int):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = nn.Sequential(Normalize(), net)
        self.output_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BACKBONES = {
    "small_cnn": SmallCNN,
    "resnet18": CifarResNet18,
}


def build_backbone(name: str, in_channels: int) -> nn.Module:
    return BACKBONES[name](in_channels)
