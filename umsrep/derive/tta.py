"""Segmentation at an image's original size, optionally averaged over geometric fits (TTA).

``segment_original`` reads nothing: it takes the original ``[H, W]`` pixels, normalizes them as
in training (``normalize_image``: fit to the square, /255 or /65535, minus the image's mean),
runs the model once per fit, maps each probability map back to ``H x W``
(``umsrep.data.geometry.from_square``) and averages them. With ``fits=("pad", "stretch")`` a
non-square radiograph is seen at its true aspect ratio and squeezed to the square (as in the
paper's preprocessing); averaging the two is test-time augmentation over aspect ratio. For a
square image both fits are the same picture and the model runs once.

A ``shift:N`` entry among the fits adds, for every fit, four views of the model's square moved
diagonally by N pixels (edge pixels repeated), each map moved back before the mean: test-time
augmentation over position (5x the forward passes).
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
    geometric, shift = split_fits(fits)
    views = list(dict.fromkeys(geometric)) if height != width else geometric[:1]
    moves = [(0, 0)] + ([(shift, shift), (-shift, -shift), (shift, -shift), (-shift, shift)]
                        if shift else [])
    total = np.zeros((height, width), dtype=np.float32)
    for fit in views:
        x, _ = normalize_image(pixels, size, fit)
        square = np.zeros((size, size), dtype=np.float32)
        for dy, dx in moves:
            seen = np.asarray(probability(shift_image(x, dy, dx)), np.float32)
            square += shift_image(seen, -dy, -dx)
        total += from_square(square / len(moves), (height, width), fit)
    return total / len(views)


def split_fits(fits: Sequence[str]) -> tuple[list[str], int]:
    """``(geometric fits, shift in pixels)`` of an ``evaluation.tta`` list (module doc);
    ``stretch`` when it names no geometric fit."""
    geometric = [f for f in fits if not str(f).startswith("shift:")]
    shifts = [int(str(f)[len("shift:"):]) for f in fits if str(f).startswith("shift:")]
    return geometric or ["stretch"], max(shifts, default=0)


def shift_image(array, dy: int, dx: int):
    """``array`` (``[..., S, S]`` tensor or ndarray) moved by ``dy, dx`` pixels, its edge
    pixels repeated into the gap."""
    if dy == 0 and dx == 0:
        return array
    size = array.shape[-1]
    pad = max(abs(dy), abs(dx))
    if isinstance(array, torch.Tensor):
        padded = torch.nn.functional.pad(array, (pad, pad, pad, pad), mode="replicate")
    else:
        padded = np.pad(array, [(0, 0)] * (array.ndim - 2) + [(pad, pad), (pad, pad)],
                        mode="edge")
    out = padded[..., pad - dy:pad - dy + size, pad - dx:pad - dx + size]
    return out.contiguous() if isinstance(out, torch.Tensor) else np.ascontiguousarray(out)
