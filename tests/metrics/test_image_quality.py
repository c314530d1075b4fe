"""PSNR, SSIM and MS-SSIM: closed-form cases, a numpy SSIM reference, size errors, real CXRs."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from umsrep.metrics import MS_SSIM_BETAS, compute_ms_ssim, compute_psnr, compute_ssim


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def reference_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Wang et al. (2004) SSIM, Gaussian window, borders reflect-padded, mean over all pixels."""
    w = gaussian_window()

    def filt(img: np.ndarray) -> np.ndarray:
        return convolve2d(np.pad(img, 5, mode="reflect"), w, mode="valid")

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())


def luminance(a: float, b: float, data_range: float = 1.0) -> float:
    c1 = (0.01 * data_range) ** 2
    return (2 * a * b + c1) / (a * a + b * b + c1)


def test_psnr_matches_formula_per_image() -> None:
    rng = np.random.default_rng(0)
    clean = rng.random((3, 1, 16, 16))
    noisy = np.clip(clean + rng.normal(0, [[[[0.05]]], [[[0.1]]], [[[0.2]]]], clean.shape), 0, 1)
    mse = ((clean - noisy) ** 2).mean(axis=(1, 2, 3))
    assert compute_psnr(clean, noisy) == pytest.approx(np.mean(10 * np.log10(1 / mse)))
    # a constant error of 0.1 is exactly 20 dB
    assert compute_psnr(np.full((1, 1, 8, 8), 0.5), np.full((1, 1, 8, 8), 0.6)) == pytest.approx(20)


def test_psnr_identical_is_infinite_and_scale_is_checked() -> None:
    image = torch.rand(2, 1, 8, 8)
    assert math.isinf(compute_psnr(image, image))
    with pytest.raises(ValueError, match="0-1 scale"):
        compute_psnr(image * 255, image * 255)
    assert compute_psnr(image * 255, image * 255 + 25.5, data_range=255) == pytest.approx(20)
    # [N, H, W] and [H, W] are read as grayscale batches; colour or 1-D input is refused
    assert compute_psnr(image[:, 0], image[:, 0] * 0.9) == compute_psnr(image, image * 0.9)
    assert compute_psnr(image[0, 0], image[0, 0] * 0.9) == compute_psnr(image[:1], image[:1] * 0.9)
    with pytest.raises(ValueError, match="grayscale"):
        compute_psnr(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="grayscale"):
        compute_psnr(torch.rand(8), torch.rand(8))


def test_ssim_matches_numpy_reference() -> None:
    rng = np.random.default_rng(1)
    clean = cv2.GaussianBlur(rng.random((48, 48)), (7, 7), 2)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1)
    assert compute_ssim(clean[None, None], noisy[None, None]) == pytest.approx(
        reference_ssim(clean, noisy), abs=1e-6
    )


def test_ssim_closed_form_on_constant_images() -> None:
    a, b = np.full((1, 1, 32, 32), 0.5), np.full((1, 1, 32, 32), 0.3)
    # zero variance: the structure term is C2 / C2 = 1, only luminance remains
    assert compute_ssim(a, b) == pytest.approx(luminance(0.5, 0.3))
    assert compute_ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="11-px window.*smaller sigma"):
        compute_ssim(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)))


def test_ms_ssim_closed_form_on_constant_images() -> None:
    a, b = np.full((1, 1, 176, 176), 0.5), np.full((1, 1, 176, 176), 0.3)
    # contrast-structure is 1 at every scale; luminance enters only at the coarsest scale
    assert compute_ms_ssim(a, b) == pytest.approx(luminance(0.5, 0.3) ** MS_SSIM_BETAS[-1])


def test_ms_ssim_on_small_images_says_what_fits() -> None:
    small = torch.rand(2, 1, 32, 32)
    with pytest.raises(ValueError, match=r"at least 176x176 px, got 32x32.*fewer scales"):
        compute_ms_ssim(small, small)
    three = MS_SSIM_BETAS[:3]
    assert compute_ms_ssim(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64), betas=three) < 0.5
    exact = torch.rand(2, 1, 44, 44)  # the smallest size three scales accept
    assert compute_ms_ssim(exact, exact, betas=three) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 44x44 px, got 43x43"):
        compute_ms_ssim(exact[..., :43, :43], exact[..., :43, :43], betas=three)


def test_ms_ssim_at_256_px_on_real_cxr(real_data: Path) -> None:
    files = sorted((real_data / "MontgomerySet" / "CXR_png").glob("*.png"))[:2]
    if not files:
        pytest.skip("no Montgomery PNGs in the real sample data")
    images = [
        cv2.resize(
            cv2.imread(str(f), cv2.IMREAD_REDUCED_GRAYSCALE_8),
            (256, 256),
            interpolation=cv2.INTER_CUBIC,
        )
        for f in files
    ]
    clean = torch.from_numpy(np.stack(images)[:, None].astype(np.float32) / 255.0)
    gen = torch.Generator().manual_seed(0)
    light = (clean + torch.randn(clean.shape, generator=gen) * 10 / 255).clamp(0, 1)
    heavy = (clean + torch.randn(clean.shape, generator=gen) * 50 / 255).clamp(0, 1)
    assert compute_ms_ssim(clean, clean) == pytest.approx(1.0)
    assert 0.0 < compute_ms_ssim(clean, heavy) < compute_ms_ssim(clean, light) < 1.0
    assert compute_ssim(clean, heavy) < compute_ssim(clean, light)
    assert compute_psnr(clean, heavy) < compute_psnr(clean, light)
