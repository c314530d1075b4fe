"""Machinery shared by the synthetic generators: the batch container, coordinate grids, batched
blurs and patient assignment."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SyntheticBatch:
    """A generated batch, before it is written to disk.

    images: uint8 [N, H, W], grayscale, pixel scale 0-255.
    masks: uint8 [N, H, W], values {0, 1} (lung fields for CXR, spectral envelope for Doppler).
    labels: one row per image with ``sample_id``, ``patient_id`` and the label columns; missing
        labels are ``pd.NA``.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: pd.DataFrame

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.images.shape[0] != n or self.masks.shape != self.images.shape:
            raise ValueError(
                f"synthetic batch: images {self.images.shape}, masks {self.masks.shape} and "
                f"{n} label rows must describe the same images"
            )


def unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1]: (u [1, 1, W] along columns, v [1, H, 1] along rows)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, None, :], c[None, :, None]


def col(values: np.ndarray) -> np.ndarray:
    """Reshape per-image parameters [N] to [N, 1, 1] so they broadcast over [N, H, W]."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def blur_batch(stack: np.ndarray, sigma_y: float, sigma_x: float | None = None) -> np.ndarray:
    """Gaussian-blur every image of a float32 [N, H, W] stack; sigmas in pixels."""
    sigma_x = sigma_y if sigma_x is None else sigma_x
    if sigma_x <= 0 and sigma_y <= 0:
        return stack
    out = np.empty_like(stack)
    for i, img in enumerate(stack):
        out[i] = cv2.GaussianBlur(
            img,
            (0, 0),
            sigmaX=max(sigma_x, 1e-3),
            sigmaY=max(sigma_y, 1e-3),
            borderType=cv2.BORDER_REFLECT,
        )
    return out


def smooth_noise(rng: np.random.Generator, n: int, size: int, scale: float) -> np.ndarray:
    """Low-frequency noise [N, H, W] with unit standard deviation per image; ``scale`` is the
    correlation length as a fraction of the image side."""
    field = blur_batch(rng.standard_normal((n, size, size)).astype(np.float32), scale * size)
    field -= field.mean(axis=(1, 2), keepdims=True)
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-6)


def to_uint8(stack: np.ndarray) -> np.ndarray:
    """float [N, H, W] on the 0-1 scale -> uint8 on the 0-255 scale (clipped, rounded)."""
    return np.rint(np.clip(stack, 0.0, 1.0) * 255.0).astype(np.uint8)


def assign_patients(rng: np.random.Generator, n: int, max_images: int) -> np.ndarray:
    """Patient index [N] for each image: consecutive runs of 1..max_images images per patient."""
    counts = rng.integers(1, max_images + 1, size=n)
    return np.repeat(np.arange(n), counts)[:n]


def patient_ids(prefix: str, patient: np.ndarray) -> list[str]:
    """Stable string ids, e.g. ``cxr-p00012``."""
    return [f"{prefix}-p{int(p):05d}" for p in patient]
