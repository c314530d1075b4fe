"""Image-quality metrics for denoising: PSNR, SSIM and MS-SSIM.

Images are float ``[N, 1, H, W]`` (``[N, H, W]`` and ``[H, W]`` are accepted too) on the 0-1
pixel scale, ``data_range=1.0`` by default: undo the dataset's mean normalization (and divide
0-255 images by 255) before scoring. Values clearly outside the scale raise a ValueError rather
than giving a silently wrong number; small overshoots of a decoder's output are allowed.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from umsrep.metrics._inputs import ArrayLike, to_tensor

#: Wang et al. (2003) weights for the 5 MS-SSIM scales, finest first.
MS_SSIM_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _image_batch(images: ArrayLike, name: str, data_range: float) -> torch.Tensor:
    tensor = to_tensor(images, name)
    tensor = tensor.double() if tensor.dtype == torch.float64 else tensor.float()
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    if tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(
            f"{name}: expected grayscale images [N, 1, H, W], got {tuple(tensor.shape)}"
        )
    low, high = float(tensor.min()), float(tensor.max())
    if low < -0.5 * data_range or high > 1.5 * data_range:
        raise ValueError(
            f"{name}: values span [{low:.3g}, {high:.3g}] but data_range={data_range}; images "
            f"must be on the 0-{data_range:g} scale (undo mean normalization, divide 0-255 "
            "images by 255, or pass data_range=255)"
        )
    return tensor


def _image_pair(
    clean: ArrayLike, denoised: ArrayLike, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    target = _image_batch(clean, "clean", data_range)
    preds = _image_batch(denoised, "denoised", data_range)
    if target.shape != preds.shape:
        raise ValueError(
            f"clean is {tuple(target.shape)} but denoised is {tuple(preds.shape)}; "
            "they must be the same images at the same size"
        )
    return target, preds


def compute_psnr(clean: ArrayLike, denoised: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, computed per image then averaged.

    ``10 log10(data_range^2 / MSE)``; an exact reconstruction gives ``inf``.
    """
    target, preds = _image_pair(clean, denoised, data_range)
    per_image = peak_signal_noise_ratio(
        preds, target, data_range=data_range, reduction="none", dim=(1, 2, 3)
    )
    return float(per_image.mean())


def gaussian_window_size(sigma: float) -> int:
    """Side (px) of the Gaussian window torchmetrics uses for ``sigma``: 11 px at sigma 1.5."""
    return 2 * int(3.5 * sigma + 0.5) + 1


def compute_ssim(
    clean: ArrayLike, denoised: ArrayLike, data_range: float = 1.0, sigma: float = 1.5
) -> float:
    """Structural similarity with a Gaussian window (sigma 1.5 -> 11 px), mean over images.

    1.0 is identical. Borders are reflect-padded, so every pixel has a window.
    """
    target, preds = _image_pair(clean, denoised, data_range)
    window = gaussian_window_size(sigma)
    if min(target.shape[-2:]) < window:
        raise ValueError(
            f"SSIM with sigma={sigma} (a {window}-px window) needs images of at least {window} "
            f"px, got {target.shape[-2]}x{target.shape[-1]}; pass a smaller sigma"
        )
    return float(
        structural_similarity_index_measure(
            preds, target, data_range=data_range, sigma=sigma, kernel_size=window
        )
    )


def ms_ssim_min_size(num_scales: int = len(MS_SSIM_BETAS), sigma: float = 1.5) -> int:
    """Smallest height and width (px) that MS-SSIM accepts with these scales and window.

    Each scale halves the image; torchmetrics also requires ``size // (scales-1)^2 >= window``.
    """
    window = gaussian_window_size(sigma)
    return max(2**num_scales, window * max(1, num_scales - 1) ** 2)


def _ms_ssim_size_error(height: int, width: int, num_scales: int, sigma: float) -> str:
    size = min(height, width)
    minimum = ms_ssim_min_size(num_scales, sigma)
    fewer = [n for n in range(1, num_scales) if ms_ssim_min_size(n, sigma) <= size]
    # the largest odd window that fits with all the scales; sigma = (window - 1) / 7 gives it
    window = min(size // max(1, num_scales - 1) ** 2, gaussian_window_size(sigma) - 2)
    window -= 1 - window % 2
    hints = []
    if fewer:
        hints.append(f"fewer scales (betas with {fewer[-1]} values fit {size} px)")
    if window >= 3 and size >= 2**num_scales:
        smaller = math.floor((window - 1) / 7 * 100) / 100
        hints.append(f"a smaller sigma (sigma={smaller} gives a {window}-px window that fits)")
    hint = " or ".join(hints) if hints else "compute_ssim instead"
    return (
        f"MS-SSIM with {num_scales} scales and sigma={sigma} (a {gaussian_window_size(sigma)}-px "
        f"window) needs images of at least {minimum}x{minimum} px, got {height}x{width}; "
        f"use {hint}"
    )


def compute_ms_ssim(
    clean: ArrayLike,
    denoised: ArrayLike,
    data_range: float = 1.0,
    sigma: float = 1.5,
    betas: tuple[float, ...] = MS_SSIM_BETAS,
) -> float:
    """Multi-scale SSIM (Wang et al. 2003), mean over images; 1.0 is identical.

    The 5 default scales with the 11-px window (sigma 1.5) need at least 176x176 px (256 px
    works); smaller images raise a ValueError naming the minimum and what would fit. Pass fewer
    ``betas`` for small images (the first three need 44 px). Negative contrast terms are
    clipped to 0 (torchmetrics ``normalize="relu"``) so the result is never NaN.
    """
    target, preds = _image_pair(clean, denoised, data_range)
    height, width = target.shape[-2:]
    if min(height, width) < ms_ssim_min_size(len(betas), sigma):
        raise ValueError(_ms_ssim_size_error(height, width, len(betas), sigma))
    return float(
        multiscale_structural_similarity_index_measure(
            preds,
            target,
            data_range=data_range,
            sigma=sigma,
            kernel_size=gaussian_window_size(sigma),
            betas=tuple(betas),
        )
    )
