"""How an ``H x W`` radiograph becomes the model's ``S x S`` square, and how a prediction goes back.

Two fits:

- ``stretch`` (the paper's): resize straight to ``S x S``; a 421x512 Montgomery image is
  squeezed differently from a square Shenzhen one, so lungs change shape between datasets.
- ``pad`` (letterbox): pad the short side with black, centred, to an ``L x L`` square
  (``L = max(H, W)``), then resize; anatomy keeps its aspect ratio. A prediction is resized
  back to ``L x L`` and the padding cropped off.

Pure functions on numpy arrays (OpenCV resizing); used by the cache, original-size scoring and
``umsrep predict`` so all three agree on the geometry.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Fit = Literal["stretch", "pad"]
FITS: tuple[str, ...] = ("stretch", "pad")


def square_box(height: int, width: int) -> tuple[int, int, int]:
    """``(L, top, left)``: the side of the letterbox square and where the image sits in it."""
    side = max(int(height), int(width))
    return side, (side - int(height)) // 2, (side - int(width)) // 2


def to_square(image: np.ndarray, size: int, fit: str = "stretch",
              interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """``[H, W]`` -> ``[size, size]`` (same dtype) by ``fit``; padding is 0 (black)."""
    _check(fit)
    if fit == "pad" and image.shape[0] != image.shape[1]:
        side, top, left = square_box(*image.shape[:2])
        square = np.zeros((side, side), dtype=image.dtype)
        square[top:top + image.shape[0], left:left + image.shape[1]] = image
        image = square
    return cv2.resize(image, (size, size), interpolation=interpolation)


def from_square(array: np.ndarray, shape: tuple[int, int], fit: str = "stretch",
                interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``[S, S]`` (a probability map, a reconstruction) -> ``[H, W]`` of the original image."""
    _check(fit)
    height, width = int(shape[0]), int(shape[1])
    if fit == "pad" and height != width:
        side, top, left = square_box(height, width)
        full = cv2.resize(array, (side, side), interpolation=interpolation)
        return np.ascontiguousarray(full[top:top + height, left:left + width])
    return cv2.resize(array, (width, height), interpolation=interpolation)


def _check(fit: str) -> None:
    if fit not in FITS:
        raise ValueError(f"fit {fit!r} unknown; use one of {list(FITS)}")
