"""Trainable backbones by name. ``build_backbone(name, in_channels, image_size, **options)`` returns
a module mapping (batch, channels, height, width) floats in [0, 1] to (batch, ``output_dim``)
features. Options every backbone takes:

- ``stem``: ``cifar`` (3x3 stride-1 first convolution, no max-pool: for 32-px images, as in SimCLR's
  and SCAN's CIFAR experiments) or ``imagenet`` (7x7 stride-2 and max-pool); ResNets only;
- ``sobel``: a fixed grayscale-then-Sobel filter in front (DeepCluster's input: two gradient channels);
- ``freeze_bn``: batch norm keeps its running statistics and affine weights fixed in training (as
  the SimCLR STL-10 system fine-tunes);
- ``widths``: the channels of the small CNN's stages or the MLP's hidden widths (None: their own);
  the other backbones have fixed widths and refuse it.
"""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """Maps [0, 1] pixels to roughly zero mean, unit range, so backbones see centred inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.5


class Sobel(nn.Module):
    """Grayscale, then horizontal and vertical Sobel gradients (Caron et al. 2018): fixed, not trained."""

    def __init__(self, in_channels: int):
        super().__init__()
        gray = torch.full((1, in_channels, 1, 1), 1.0 / in_channels)
        sobel = torch.tensor([[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]])
        self.register_buffer("gray", gray)
        self.register_buffer("sobel", torch.stack([sobel, sobel.transpose(1, 2)]))  # (2, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(nn.functional.conv2d(x, self.gray), self.sobel, padding=1)


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_cnn(in_channels: int, image_size: int, stem: str, widths=(32, 64, 128)):
    """A stage of two 3x3 convolutions per width (three by default), max-pooling between them, global
    average pooling.
    Sized for small images (8x8 digits to 32x32 CIFAR): cheap enough to pretrain on a laptop CPU."""
    layers: list[nn.Module] = []
    c = in_channels
    for i, w in enumerate(widths):
        if i:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        layers += _conv_block(c, w) + _conv_block(w, w)
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), c


def mlp(in_channels: int, image_size: int, stem: str, widths=(512, 512)):
    """A fully connected network on the flattened pixels."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = in_channels * image_size * image_size
    for w in widths:
        layers += [nn.Linear(d, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
        d = w
    return nn.Sequential(*layers), d


def _resnet(depth: int):
    def build(in_channels: int, image_size: int, stem: str):
        """torchvision's ResNet-``depth`` without its classifier, with the chosen stem."""
        import torchvision.models as tvm

        net = getattr(tvm, f"resnet{depth}")(weights=None)
        if stem == "cifar":
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        else:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim

    return build


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet32(in_channels: int, image_size: int, stem: str, widths=(16, 32, 64)):
    """He et al. 2016's CIFAR ResNet-32 (section 4.2): three stages of five basic blocks, 16-32-64
    channels (``widths``: wider stages, as wide ResNets), projection shortcuts where the shape
    changes; features as wide as the last stage."""
    if len(widths) != 3:
        raise ValueError(f"resnet32 has three stages; widths={list(widths)} gives {len(widths)}")
    layers: list[nn.Module] = _conv_block(in_channels, widths[0])
    c = widths[0]
    for stage, width in enumerate(widths):
        for block in range(5):
            layers.append(_BasicBlock(c, width, 2 if stage and not block else 1))
            c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), c


def vgg16(in_channels: int, image_size: int, stem: str):
    """VGG-16 with batch norm (DeepCluster's network), its convolutions and global average pooling: 512-d."""
    from torchvision.models import vgg16_bn

    features = vgg16_bn(weights=None).features
    features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    if image_size < 32:  # five 2x2 poolings need 32 px; drop the last ones for smaller images
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        keep = max(0, int(image_size).bit_length() - 1)
        for i in pools[keep:]:
            features[i] = nn.Identity()
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 512


def alexnet(in_channels: int, image_size: int, stem: str):
    """AlexNet's convolutions (DeepCluster's other network) and global average pooling: 256-d.
    Its 11x11 stride-4 stem wants images of 64 px or more."""
    from torchvision.models import alexnet as tv_alexnet

    features = tv_alexnet(weights=None).features
    features[0] = nn.Conv2d(in_channels, 64, 11, stride=4, padding=2)
    if image_size < 64:  # keep a spatial map: no max-pooling on small images
        for i, m in enumerate(features):
            if isinstance(m, nn.MaxPool2d):
                features[i] = nn.Identity()
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 256


WIDTHS_TAKEN = {"small_cnn", "mlp", "resnet32"}  # backbones whose widths are an option
BACKBONES = {
    "small_cnn": small_cnn,
    "mlp": mlp,
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "resnet101": _resnet(101),
    "resnet152": _resnet(152),
    "resnet32": resnet32,
    "vgg16": vgg16,
    "alexnet": alexnet,
}


class Backbone(nn.Module):
    """Input normalisation (or the Sobel filter), then the named network; ``output_dim`` features."""

    def __init__(
        self,
        name: str,
        in_channels: int,
        image_size: int,
        stem: str = "cifar",
        sobel: bool = False,
        freeze_bn: bool = False,
        widths: list[int] | None = None,
    ):
        super().__init__()
        self.options = {"stem": stem, "sobel": sobel, "freeze_bn": freeze_bn, "widths": widths}
        self.front = Sobel(in_channels) if sobel else Normalize()
        if widths is not None and name not in WIDTHS_TAKEN:
            raise ValueError(f"backbone {name!r} has fixed widths; widths apply to {', '.join(sorted(WIDTHS_TAKEN))}")
        extra = {} if widths is None else {"widths": tuple(widths)}
        self.net, self.output_dim = BACKBONES[name](2 if sobel else in_channels, image_size, stem, **extra)
        if freeze_bn:
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    for p in m.parameters():
                        p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.options["freeze_bn"]:  # running statistics stay as they are
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.front(x))


def build_backbone(name: str, in_channels: int, image_size: int = 32, **options) -> Backbone:
    return Backbone(name, in_channels, image_size, **options)
