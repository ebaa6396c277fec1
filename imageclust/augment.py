"""Augmentation presets by name, applied to whole batches on the training device.

Per-sample PIL transforms cost more than the model itself on small images, so every preset is a
batched tensor op: one random affine warp per sample (crop, scale, aspect, rotation, flip) through
``affine_grid``/``grid_sample``, then per-sample colour jitter, grayscale, Gaussian blur, noise and
random erasing. Input and output are float tensors in [0, 1] of shape (batch, channels, height, width).

A preset is a starting point: ``pretrain.augment`` names it and may override its strengths
(``configure``). A fixed Sobel filter is not an augmentation here but part of the network
(``pretrain.sobel``), so that extraction sees it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from pydantic import Field

from .config import Section, interval, one_of


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.2, 1.0)  # area fraction kept, as RandomResizedCrop
    aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotation_degrees: float = 0.0
    hflip: bool = False
    brightness: float = 0.0  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.0
    noise_std: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in pixels, drawn per image
    erase_prob: float = 0.0  # random erasing (Zhong et al. 2020): one rectangle set to black
    erase_scale: tuple[float, float] = (0.02, 0.25)  # area fraction of that rectangle
    padding_mode: str = "zeros"  # what the warp shows outside the image


PRESETS: dict[str, AugmentConfig] = {
    # Small grayscale images (digits, scans, Fashion-MNIST): no flips (they change a digit's meaning;
    # set hflip for clothes), mild crops and rotations, the background stays black outside the image.
    "gray": AugmentConfig(crop_scale=(0.5, 1.0), rotation_degrees=15.0, brightness=0.4, contrast=0.4, noise_std=0.05),
    # Photos: SimCLR's recipe (Chen et al. 2020, appendix A), without hue jitter; its blur is off at
    # CIFAR's 32 px, as the paper's CIFAR experiments do (appendix B.9): set blur_prob for larger photos.
    "color": AugmentConfig(
        crop_scale=(0.2, 1.0),
        hflip=True,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        grayscale_prob=0.2,
        padding_mode="reflection",
    ),
    # No augmentation: two identical views; useful as an ablation.
    "none": AugmentConfig(crop_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0), jitter_prob=0.0),
}


PresetName = one_of(lambda: PRESETS, "augmentation preset")


class AugmentParams(Section):
    """A preset and the strengths that replace its own; null keeps the preset's."""

    preset: PresetName = Field(
        "gray",
        description=(
            "augmentation preset (`imageclust/augment.py`), batched on the device: `gray` for small grayscale "
            "images (crop, rotation, brightness/contrast, noise; no flips, which change digits), `color` for "
            "photos (SimCLR's: resized crop, flip, colour jitter, grayscale), `none` two identical views. The "
            "keys below replace the preset's strengths; `null` keeps them. A fixed Sobel filter is "
            "`pretrain.sobel`, part of the network"
        ),
    )
    crop_min_scale: float | None = Field(
        None, gt=0, le=1, description="smallest area fraction a random resized crop keeps (`gray` 0.5, `color` 0.2)"
    )
    rotation_degrees: float | None = Field(
        None, ge=0, le=180, description="random rotation within plus or minus this (`gray` 15)"
    )
    hflip: bool | None = Field(
        None, description="random horizontal flips (`color` true; clothes and photos, not digits)"
    )
    jitter: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "colour jitter strength: brightness, contrast and saturation factors drawn from [1 - s, 1 + s] (0.4)"
        ),
    )
    jitter_prob: float | None = Field(None, ge=0, le=1, description="share of images jittered (0.8)")
    grayscale_prob: float | None = Field(
        None, ge=0, le=1, description="share of colour images turned gray (`color` 0.2)"
    )
    blur_prob: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "share of images blurred by a Gaussian (0: SimCLR leaves it off at 32 px; about 0.5 for larger photos)"
        ),
    )
    blur_sigma: interval(0.0) = Field(None, description="the blur's sigma in pixels, drawn per image (`[0.1, 2.0]`)")
    noise_std: float | None = Field(None, ge=0, description="additive Gaussian pixel noise (`gray` 0.05)")
    erase_prob: float | None = Field(
        None, ge=0, le=1, description="random erasing (Zhong et al. 2020): share of images with one black rectangle (0)"
    )
    erase_scale: interval(0.0, 1.0) = Field(None, description="the erased rectangle's area fraction (`[0.02, 0.25]`)")

    def strengths(self) -> dict:
        return self.model_dump(exclude={"preset"})


def _uniform(n: int, low: float, high: float, device, generator=None) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator) * (high - low) + low


def random_affine_grid(n: int, height: int, width: int, cfg: AugmentConfig, device, generator=None):
    """Sampling grids of random resized crops with rotation and flip, one per sample."""
    area = _uniform(n, *cfg.crop_scale, device, generator)
    log_ratio = _uniform(n, math.log(cfg.aspect_ratio[0]), math.log(cfg.aspect_ratio[1]), device, generator)
    ratio = log_ratio.exp()
    scale_x = (area * ratio).sqrt().clamp(max=1.0)
    scale_y = (area / ratio).sqrt().clamp(max=1.0)
    # Crop centre anywhere that keeps the crop inside the image.
    shift_x = (torch.rand(n, device=device, generator=generator) * 2 - 1) * (1 - scale_x)
    shift_y = (torch.rand(n, device=device, generator=generator) * 2 - 1) * (1 - scale_y)
    angle = _uniform(n, -cfg.rotation_degrees, cfg.rotation_degrees, device, generator) * (math.pi / 180)
    flip = torch.ones(n, device=device)
    if cfg.hflip:
        flip = torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([scale_x * cos * flip, -scale_y * sin, shift_x], dim=1),
            torch.stack([scale_x * sin * flip, scale_y * cos, shift_y], dim=1),
        ],
        dim=1,
    )
    return F.affine_grid(theta, [n, 1, height, width], align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, cfg: AugmentConfig, generator=None) -> torch.Tensor:
    n, device = x.shape[0], x.device
    apply = (torch.rand(n, device=device, generator=generator) < cfg.jitter_prob).float().view(n, 1, 1, 1)

    def factor(strength: float) -> torch.Tensor:
        f = _uniform(n, 1 - strength, 1 + strength, device, generator).view(n, 1, 1, 1)
        return apply * f + (1 - apply)

    out = x
    if cfg.brightness:
        out = out * factor(cfg.brightness)
    if cfg.contrast:
        mean = _gray(out).mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * factor(cfg.contrast) + mean
    if cfg.saturation and x.shape[1] == 3:
        gray = _gray(out)
        out = (out - gray) * factor(cfg.saturation) + gray
    return out.clamp(0, 1)


def gaussian_blur(x: torch.Tensor, prob: float, sigma: tuple[float, float], generator=None) -> torch.Tensor:
    """Blurs each image with probability ``prob`` by a Gaussian of its own sigma, drawn uniformly
    from ``sigma``: one separable convolution over the whole batch (a kernel per image)."""
    n, c, h, w = x.shape
    blurred = torch.rand(n, device=x.device, generator=generator) < prob
    sigmas = _uniform(n, *sigma, x.device, generator).clamp(min=1e-3)
    radius = max(1, min(math.ceil(2 * sigma[1]), (min(h, w) - 1) // 2))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigmas[:, None].to(x.dtype) ** 2))
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, taps)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernels[:, None, :, None], groups=n * c)
    return torch.where(blurred.view(n, 1, 1, 1), flat.reshape(n, c, h, w), x)


def random_erasing(
    x: torch.Tensor, prob: float, scale: tuple[float, float], generator=None, ratio: tuple[float, float] = (0.3, 3.3)
) -> torch.Tensor:
    """Random erasing (Zhong et al., AAAI 2020): with probability ``prob`` a rectangle of ``scale``
    of the image's area and aspect ratio in ``ratio`` is set to 0, independently per image."""
    n, _, h, w = x.shape
    erased = torch.rand(n, device=x.device, generator=generator) < prob
    area = _uniform(n, *scale, x.device, generator) * h * w
    aspect = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), x.device, generator).exp()
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    top = (torch.rand(n, device=x.device, generator=generator) * (h - eh + 1)).floor()
    left = (torch.rand(n, device=x.device, generator=generator) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + eh)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + ew)[:, None, None])
    )
    return x.masked_fill((inside & erased[:, None, None]).unsqueeze(1), 0.0)


class Augmenter:
    """Callable turning a batch into one random view of it."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg, n = self.cfg, x.shape[0]
        grid = random_affine_grid(n, x.shape[2], x.shape[3], cfg, x.device, generator).to(x.dtype)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode=cfg.padding_mode, align_corners=False)
        out = color_jitter(out, cfg, generator)
        if cfg.grayscale_prob and out.shape[1] == 3:
            to_gray = (torch.rand(n, device=x.device, generator=generator) < cfg.grayscale_prob).view(n, 1, 1, 1)
            out = torch.where(to_gray, _gray(out).expand_as(out), out)
        # each step draws random numbers only when it is on, so adding a step leaves the others' draws
        if cfg.blur_prob:
            out = gaussian_blur(out, cfg.blur_prob, cfg.blur_sigma, generator)
        if cfg.noise_std:
            noise = torch.randn(out.shape, device=out.device, generator=generator, dtype=out.dtype)
            out = (out + cfg.noise_std * noise).clamp(0, 1)
        if cfg.erase_prob:
            out = random_erasing(out, cfg.erase_prob, cfg.erase_scale, generator)
        return out


def configure(preset: str, **strengths) -> AugmentConfig:
    """The named preset with the given strengths replaced (None keeps the preset's). ``jitter`` sets
    brightness, contrast and saturation together, as SimCLR's colour distortion strength does;
    ``crop_min_scale`` the smallest area a crop keeps."""
    cfg = PRESETS[preset]
    changes = {key: value for key, value in strengths.items() if value is not None}
    if "jitter" in changes:
        strength = changes.pop("jitter")
        changes.update(brightness=strength, contrast=strength, saturation=strength)
    if "crop_min_scale" in changes:
        changes["crop_scale"] = (changes.pop("crop_min_scale"), 1.0)
    for key in ("blur_sigma", "erase_scale"):
        if key in changes:
            changes[key] = tuple(changes[key])
    return replace(cfg, **changes)


def build_augmenter(preset: str, **strengths) -> Augmenter:
    return Augmenter(configure(preset, **strengths))
