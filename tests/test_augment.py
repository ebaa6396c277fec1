"""Batched augmentation presets: shapes, ranges, reproducibility and what each transform does."""

import pytest
import torch

from imageclust.augment import (
    PRESETS,
    AugmentConfig,
    Augmenter,
    build_augmenter,
    configure,
    gaussian_blur,
    random_erasing,
)

IDENTITY = dict(crop_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0), jitter_prob=0.0)


def batch(n=6, c=3, h=8, w=8, seed=0, dtype=torch.float32):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_preset_keeps_shape_dtype_and_range(name, channels):
    x = batch(c=channels, h=8, w=10)
    out = build_augmenter(name)(x, gen(0))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_works_without_generator_and_in_float64(name):
    x = batch(c=3, dtype=torch.float64)
    out = build_augmenter(name)(x)
    assert out.shape == x.shape and out.dtype == torch.float64
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_registry_contents():
    assert {"gray", "color", "none"} <= set(PRESETS)
    assert all(isinstance(cfg, AugmentConfig) for cfg in PRESETS.values())
    assert PRESETS["gray"].hflip is False  # flipping changes a digit's meaning
    assert PRESETS["color"].hflip is True


@pytest.mark.parametrize("name", ["gray", "color"])
@pytest.mark.parametrize("channels", [1, 3])
def test_same_seed_same_output_different_seed_different(name, channels):
    aug, x = build_augmenter(name), batch(c=channels)
    a = aug(x, gen(123))
    torch.manual_seed(999)  # the global RNG must not matter when a generator is given
    b = aug(x, gen(123))
    c = aug(x, gen(124))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)


def test_successive_views_from_one_generator_differ():
    aug, x, g = build_augmenter("gray"), batch(c=1), gen(0)
    assert not torch.allclose(aug(x, g), aug(x, g), atol=1e-3)


def test_augmentation_changes_the_image():
    x = batch(c=3)
    for name in ("gray", "color"):
        assert (build_augmenter(name)(x, gen(0)) - x).abs().mean() > 0.01


@pytest.mark.parametrize("channels", [1, 3])
def test_none_preset_is_identity(channels):
    x = batch(c=channels, h=8, w=12)
    out = build_augmenter("none")(x, gen(5))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def asymmetric_images(n):
    """Left half bright, right half dark (plus a gradient): differs from its mirror everywhere."""
    cols = torch.linspace(1.0, 0.0, 8)
    img = cols.expand(8, 8).clone()
    return img.expand(n, 1, 8, 8).clone()


def test_hflip_mirrors_about_half_of_the_batch():
    n = 64
    x = asymmetric_images(n)
    mirrored = x.flip(-1)
    out = Augmenter(AugmentConfig(hflip=True, **IDENTITY))(x, gen(0))
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    flipped = (out - mirrored).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (same ^ flipped).all(), "every output is either the image or its mirror"
    assert 16 <= flipped.sum() <= 48
    # without hflip nothing is mirrored
    out = Augmenter(AugmentConfig(hflip=False, **IDENTITY))(x, gen(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_crop_zooms_in():
    # Keeping at most a quarter of the area of a centred bright square on black: the mean
    # brightness changes and the output stays an image of the same size.
    x = torch.zeros(16, 1, 16, 16)
    x[:, :, 4:12, 4:12] = 1.0
    cfg = AugmentConfig(crop_scale=(0.1, 0.25), aspect_ratio=(1.0, 1.0), jitter_prob=0.0)
    out = Augmenter(cfg)(x, gen(0))
    assert out.shape == x.shape
    assert not torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.05)


def test_brightness_jitter_scales_within_bounds():
    x = torch.full((32, 1, 4, 4), 0.5)
    cfg = AugmentConfig(brightness=0.5, jitter_prob=1.0, crop_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0))
    out = Augmenter(cfg)(x, gen(0))
    per_sample = out.mean(dim=(1, 2, 3))
    # each image is multiplied by one factor in [0.5, 1.5]: constant within the image
    torch.testing.assert_close(out.amax(dim=(1, 2, 3)), out.amin(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    assert per_sample.min() >= 0.25 - 1e-5 and per_sample.max() <= 0.75 + 1e-5
    assert per_sample.std() > 0.05


def test_jitter_prob_zero_disables_colour_jitter():
    x = batch(c=3)
    cfg = AugmentConfig(
        brightness=0.9,
        contrast=0.9,
        saturation=0.9,
        jitter_prob=0.0,
        **{k: v for k, v in IDENTITY.items() if k != "jitter_prob"},
    )
    torch.testing.assert_close(Augmenter(cfg)(x, gen(0)), x, atol=1e-5, rtol=0)


def test_grayscale_prob_one_makes_channels_equal():
    x = batch(c=3)
    out = Augmenter(AugmentConfig(grayscale_prob=1.0, **IDENTITY))(x, gen(0))
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(out[:, c], expected, atol=1e-5, rtol=0)


def test_noise_is_added_and_clamped():
    x = torch.full((4, 1, 8, 8), 0.5)
    out = Augmenter(AugmentConfig(noise_std=0.1, **IDENTITY))(x, gen(0))
    diff = out - x
    assert 0.05 < diff.std() < 0.15
    assert diff.abs().max() > 0  # noise was added


def test_configure_replaces_only_the_strengths_given():
    cfg = configure("gray", rotation_degrees=30.0, jitter=0.2, crop_min_scale=0.3, blur_prob=None)
    assert cfg.rotation_degrees == 30.0 and cfg.crop_scale == (0.3, 1.0)
    assert cfg.brightness == cfg.contrast == cfg.saturation == 0.2
    assert cfg.noise_std == PRESETS["gray"].noise_std and cfg.blur_prob == PRESETS["gray"].blur_prob
    assert configure("color", blur_sigma=[0.5, 1.0]).blur_sigma == (0.5, 1.0)
    assert configure("gray") == PRESETS["gray"]


def test_steps_that_are_off_draw_nothing():
    """Turning on blur or erasing after the other steps leaves their random draws as they were."""
    x = batch(c=1)
    plain = Augmenter(PRESETS["gray"])(x, gen(3))
    with_zero_prob_steps = Augmenter(configure("gray", blur_prob=0.0, erase_prob=0.0))(x, gen(3))
    assert torch.equal(plain, with_zero_prob_steps)


def test_gaussian_blur_by_hand():
    """A single bright pixel spreads into the normalised 1-D Gaussian's outer product; sigma 0 keeps it."""
    x = torch.zeros(2, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    sigma = 1.0
    out = gaussian_blur(x, prob=1.0, sigma=(sigma, sigma), generator=gen(0))
    taps = torch.exp(-(torch.arange(-2.0, 3.0) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    expected = torch.zeros(9, 9)
    expected[2:7, 2:7] = torch.outer(taps, taps)
    torch.testing.assert_close(out[0, 0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(dim=(2, 3)), torch.ones(2, 1), atol=1e-5, rtol=0)  # mass is kept
    torch.testing.assert_close(gaussian_blur(x, prob=0.0, sigma=(1.0, 2.0), generator=gen(0)), x)


def test_blur_applies_to_about_prob_of_the_batch_each_with_its_own_sigma():
    x = batch(n=200, c=3, h=12, w=12)
    out = gaussian_blur(x, prob=0.5, sigma=(0.5, 2.0), generator=gen(1))
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert 70 <= changed.sum() <= 130
    smoothness = out[changed].diff(dim=-1).abs().mean(dim=(1, 2, 3))
    assert smoothness.std() > 0  # different sigmas blur differently
    assert out[changed].diff(dim=-1).abs().mean() < x.diff(dim=-1).abs().mean() * 0.8


def test_random_erasing_sets_one_rectangle_to_black():
    x = torch.ones(300, 1, 16, 16)
    out = random_erasing(x, prob=0.5, scale=(0.05, 0.2), generator=gen(2))
    erased = (out == 0).sum(dim=(1, 2, 3))
    hit = erased > 0
    assert 110 <= hit.sum() <= 190
    fraction = erased[hit].float() / 256
    assert fraction.min() >= 0.02 and fraction.max() <= 0.3  # the drawn area, up to rounding
    for image in out[hit][:20, 0]:  # the zeros form one axis-aligned rectangle
        rows, cols = (image == 0).nonzero(as_tuple=True)
        box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (box == 0).all()
    assert torch.equal(random_erasing(x, prob=0.0, scale=(0.1, 0.2), generator=gen(0)), x)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_step_on_at_once(channels):
    cfg = configure("color", blur_prob=1.0, erase_prob=1.0, noise_std=0.1, rotation_degrees=30.0)
    out = Augmenter(cfg)(batch(n=8, c=channels, h=16, w=16), gen(0))
    assert out.shape == (8, channels, 16, 16) and out.min() >= 0 and out.max() <= 1
