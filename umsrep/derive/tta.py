"""Segmentation at an image's original size, optionally averaged over geometric fits (TTA).

``segment_original`` reads nothing: it takes the original ``[H, W]`` pixels, normalizes them as
in training (``normalize_image``: fit to the square, /255 or /65535, minus the image's mean),
runs the model once per fit, maps each probability map back to ``H x W``
(``umsrep.data.geometry.from_square``) and averages them. With ``fits=("pad", "stretch")`` a
non-square radiograph is seen at its true aspect ratio and squeezed to the square (as in the
paper's preprocessing); averaging the two is test-time augmentation over aspect ratio. For a
square image both fits are the same picture and the model runs once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from umsrep.data.geometry import from_square, to_square


def normalize_image(pixels: np.ndarray, size: int,
                    fit: str = "stretch") -> tuple[torch.Tensor, float]:
    """``[H, W]`` uint8/uint16 -> (``[1, 1, size, size]`` float32 mean-centred 0-1, mean)."""
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    resized = to_square(pixels, size, fit, cv2.INTER_CUBIC)
    x = torch.from_numpy(resized.astype(np.float32) / scale)
    mean = float(x.mean())
    return (x - mean)[None, None], mean


@torch.no_grad()
def segment_original(model, task: str, pixels: np.ndarray, size: int,
                     fits: Sequence[str] = ("stretch",),
                     device: str | torch.device = "cpu") -> np.ndarray:
    """Probability map float32 ``[H, W]`` (0-1) of segmentation ``task`` for ``pixels``."""
    model.eval()

    def probability(x: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(model(x.to(device), [task])[task].float())[0, 0].cpu().numpy()

    return average_over_fits(probability, pixels, size, fits)


def average_over_fits(probability: Callable[[torch.Tensor], np.ndarray], pixels: np.ndarray,
                      size: int, fits: Sequence[str] = ("stretch",)) -> np.ndarray:
    """The mean over ``fits`` of ``probability(x)`` (``x``: ``normalize_image``'s
    ``[1, 1, size, size]``; returns an ``[size, size]`` 0-1 map) mapped back to ``[H, W]``.

    Whatever runs the model (PyTorch here, ONNX Runtime in ``umsrep.bundle``) supplies
    ``probability``; a square image is seen once, whatever ``fits`` lists.
    """
    height, width = pixels.shape[:2]
    views = list(dict.fromkeys(fits)) if height != width else list(fits)[:1]
    total = np.zeros((height, width), dtype=np.float32)
    for fit in views:
        x, _ = normalize_image(pixels, size, fit)
        total += from_square(probability(x), (height, width), fit)
    return total / len(views)
