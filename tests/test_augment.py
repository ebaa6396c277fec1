"""Batched augmentation presets: shapes, ranges, reproducibility and what each transform does."""

import pytest
import torch

from imageclust.augment import PRESETS, AugmentConfig, Augmenter, build_augmenter

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
    assert {"digits", "cifar", "none"} <= set(PRESETS)
    assert all(isinstance(cfg, AugmentConfig) for cfg in PRESETS.values())
    assert PRESETS["digits"].hflip is False  # flipping changes a digit's meaning
    assert PRESETS["cifar"].hflip is True


@pytest.mark.parametrize("name", ["digits", "cifar"])
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
    aug, x, g = build_augmenter("digits"), batch(c=1), gen(0)
    assert not torch.allclose(aug(x, g), aug(x, g), atol=1e-3)


def test_augmentation_changes_the_image():
    x = batch(c=3)
    for name in ("digits", "cifar"):
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
    same = ((out - x).abs().amax(dim=(1, 2, 3)) < 1e-5)
    flipped = ((out - mirrored).abs().amax(dim=(1, 2, 3)) < 1e-5)
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
    cfg = AugmentConfig(brightness=0.9, contrast=0.9, saturation=0.9, jitter_prob=0.0, **{
        k: v for k, v in IDENTITY.items() if k != "jitter_prob"})
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
