"""Noise for denoising pretraining: statistics on the 0-255 scale, clipping, reproducibility."""

from __future__ import annotations

import pytest
import torch

from umsrep.noise import NoiseConfig, add_noise, sample_noise


def _gray(batch: int = 4, size: int = 64, level: float = 0.5):
    """A flat mid-gray image, normalized: pixel/255 - mean = 0."""
    x = torch.zeros(batch, 1, size, size)
    return x, torch.full((batch,), level)


@pytest.mark.parametrize("sigma", [10.0, 30.0])
def test_gaussian_std_is_sigma_over_255(sigma):
    x, mean = _gray()
    g = torch.Generator().manual_seed(0)
    noise = add_noise(x, mean, "gaussian", sigma, g, clip=False) - x
    assert noise.mean().abs() < 0.2 * sigma / 255
    assert noise.std().item() == pytest.approx(sigma / 255, rel=0.03)


@pytest.mark.parametrize("sigma", [10.0, 40.0])
def test_poisson_is_zero_mean_with_variance_sigma_squared(sigma):
    x, mean = _gray()
    g = torch.Generator().manual_seed(0)
    noise = add_noise(x, mean, "poisson", sigma, g, clip=False) - x
    assert noise.mean().abs() < 0.2 * sigma / 255
    assert noise.var().item() == pytest.approx(sigma**2 / 255**2, rel=0.05)
    # Poisson noise lives on an integer grid of pixel values
    pixels = noise * 255
    torch.testing.assert_close(pixels, pixels.round(), atol=1e-3, rtol=0)


def test_per_image_sigma():
    x, mean = _gray(batch=2)
    g = torch.Generator().manual_seed(0)
    noise = add_noise(x, mean, "gaussian", torch.tensor([5.0, 50.0]), g, clip=False) - x
    assert noise[0].std() == pytest.approx(5 / 255, rel=0.05)
    assert noise[1].std() == pytest.approx(50 / 255, rel=0.05)


def test_clip_keeps_pixels_in_0_255():
    x, mean = _gray(batch=2, level=0.95)  # bright image: noise pushes many pixels past 255
    noisy = add_noise(x, mean, "gaussian", 50.0, torch.Generator().manual_seed(0))
    pixels = (noisy + mean.view(-1, 1, 1, 1)) * 255
    assert pixels.max() <= 255 + 1e-4 and pixels.min() >= -1e-4
    assert (pixels > 254.99).float().mean() > 0.1


def test_same_generator_seed_same_noise():
    x, mean = _gray(batch=3, size=32)
    cfg = NoiseConfig(kinds=("gaussian", "poisson"))
    a = sample_noise(x, mean, cfg, torch.Generator().manual_seed(7))
    b = sample_noise(x, mean, cfg, torch.Generator().manual_seed(7))
    c = sample_noise(x, mean, cfg, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_sample_noise_draws_sigma_per_image_or_per_batch():
    x, mean = _gray(batch=16, size=32)
    g = torch.Generator().manual_seed(0)
    cfg = NoiseConfig(sigmas=(10.0, 50.0), clip=False)
    stds = (sample_noise(x, mean, cfg, g) - x).flatten(1).std(1) * 255
    assert ((stds - 10).abs() < 2).any() and ((stds - 50).abs() < 5).any()
    one = NoiseConfig(sigmas=(10.0, 50.0), per_image=False, clip=False)
    stds = (sample_noise(x, mean, one, g) - x).flatten(1).std(1) * 255
    assert (stds.max() - stds.min()) < 8


def test_bad_noise_settings_are_refused():
    x, mean = _gray(batch=1)
    with pytest.raises(ValueError, match="speckle"):
        add_noise(x, mean, "speckle", 10.0)
    with pytest.raises(ValueError, match="kinds"):
        NoiseConfig(kinds=("salt",))
    with pytest.raises(ValueError, match="shape"):
        add_noise(x, mean, "gaussian", torch.tensor([1.0, 2.0]))
