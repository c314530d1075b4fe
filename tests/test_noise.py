"""Noise for denoising pretraining: statistics on the 0-255 scale, clipping, reproducibility."""

from __future__ import annotations

import pytest
import torch

from umsrep.noise import NoiseConfig, add_noise, mask_blocks, sample_noise


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


def test_mask_blocks_blanks_whole_cells_at_the_given_rate():
    x = torch.ones(64, 1, 18, 18)  # 18 px: the last row and column of 4 px cells are cut short
    g = torch.Generator().manual_seed(0)
    out = mask_blocks(x, 0.3, 4, g)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    cells = torch.nn.functional.pad(out, (0, 2, 0, 2), value=-1).unfold(2, 4, 4).unfold(3, 4, 4)
    for cell in cells.reshape(-1, 16):
        assert len(set(cell[cell >= 0].tolist())) == 1  # a cell is kept or blanked whole
    assert 0.25 < float((cells[..., 0, 0] == 0).float().mean()) < 0.35
    torch.testing.assert_close(out, mask_blocks(x, 0.3, 4, torch.Generator().manual_seed(0)))
    assert mask_blocks(x, 0.0, 4) is x


def test_sample_noise_masks_after_the_noise_with_the_same_generator():
    x, mean = _gray(batch=8, size=32)
    x = x + 0.3  # away from 0, so a blanked cell shows as exact zeros
    cfg = NoiseConfig(sigmas=(10.0,), clip=False, mask=0.5, mask_block=8)
    a = sample_noise(x, mean, cfg, torch.Generator().manual_seed(3))
    b = sample_noise(x, mean, cfg, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    zero = a == 0
    assert 0.3 < float(zero.float().mean()) < 0.7
    assert ((a - x)[~zero].std() * 255 - 10).abs() < 1.5  # the noise still on what is kept
    with pytest.raises(ValueError, match="mask"):
        NoiseConfig(mask=1.0)
