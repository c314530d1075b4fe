"""Per-image contrast normalization of a radiograph, applied before anything else sees it.

Radiographs from different sites differ most in their grey-level distribution: JSRT's films are
washed out, Montgomery's have bright, high-contrast lateral fields, Shenzhen's sit in between.
Augmentation teaches a model to tolerate some of it; normalizing each image removes most of it
before the model looks. ``data.contrast`` picks one method for the whole experiment, and the same
function runs wherever an original image is read: the preprocessing cache (training, validation,
denoising pretraining), original-size scoring with test-time augmentation, and ``umsrep predict``
(the method is stored in every ``model.json``).

- ``none``: the pixels as read.
- ``clahe``: the grey levels stretched between the image's 0.5th and 99.5th percentiles, then
  OpenCV's contrast-limited adaptive histogram equalization (clip limit 2, 8x8 tiles relative
  to the image, so the same at any resolution), the usual preprocessing of CXR lung
  segmentation. The stretch barely touches a normal film (Shenzhen, Montgomery and most of JSRT
  already span 0 to 228-255) but rescues a washed-out one: four visible JSRT films lie wholly
  within 239-254, where CLAHE alone (its clip limit bounds the gain) left them white and the
  shared models of the first CLAHE run found no lung in them (Dice 0). Black borders and
  letterbox bands stay near black (an all-black tile maps to ~3 % grey).
- ``equalize``: global histogram equalization (uint8 only through OpenCV; 16-bit images are
  equalized on their own cumulative histogram with NumPy).
"""

from __future__ import annotations

import cv2
import numpy as np

CONTRASTS = ("none", "clahe", "equalize")
CLAHE_CLIP = 2.0
CLAHE_TILES = 8
STRETCH_PERCENTILES = (0.5, 99.5)
# bumped whenever a method's output changes: part of the cache and backbone store keys
VERSION = 2


def contrast_key(method: str) -> str:
    """What caches and stored backbones are keyed on: ``none`` or ``<method>-v<VERSION>``."""
    _check(method)
    return method if method == "none" else f"{method}-v{VERSION}"


def model_contrast_problem(meta: dict) -> str | None:
    """Why a model folder's (or bundle's) ``contrast`` cannot be applied as it was trained, or
    None: a ``contrast_key`` of another version than this umsrep's (the model saw other
    images). A folder written before keys were recorded is taken at its word."""
    method = meta.get("contrast", "none")
    if method not in CONTRASTS:
        return f"contrast {method!r} is unknown to this umsrep (known: {', '.join(CONTRASTS)})"
    recorded = meta.get("contrast_key")
    if recorded is not None and recorded != contrast_key(method):
        return (f"trained on images normalized by {recorded}, but this umsrep applies "
                f"{contrast_key(method)}: predict with the umsrep version that trained it, or "
                "train it again")
    return None


def _check(method: str) -> None:
    if method not in CONTRASTS:
        raise ValueError(f"contrast {method!r} unknown; use one of {list(CONTRASTS)}")


def _equalize16(pixels: np.ndarray) -> np.ndarray:
    hist = np.bincount(pixels.ravel(), minlength=65536)
    cdf = np.cumsum(hist).astype(np.float64)
    lo = cdf[cdf > 0][0]
    lut = np.round((cdf - lo) / max(cdf[-1] - lo, 1.0) * 65535.0).clip(0, 65535)
    return lut.astype(np.uint16)[pixels]


def stretch(pixels: np.ndarray, percentiles: tuple[float, float] = STRETCH_PERCENTILES
            ) -> np.ndarray:
    """Grey levels mapped linearly so the percentiles span the dtype's range (same dtype)."""
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    lo, hi = np.percentile(pixels, percentiles)
    if hi - lo < 1.0:  # a flat image: nothing to stretch
        return pixels
    out = (pixels.astype(np.float32) - lo) * (top / (hi - lo))
    return np.clip(np.rint(out), 0, top).astype(pixels.dtype)


def apply_contrast(pixels: np.ndarray, method: str = "none") -> np.ndarray:
    """``[H, W]`` uint8/uint16 -> the same shape and dtype, normalized by ``method``."""
    _check(method)
    if method == "none":
        return pixels
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"contrast {method!r} needs uint8 or uint16 pixels, got {pixels.dtype}")
    pixels = np.ascontiguousarray(pixels)
    if method == "clahe":
        height, width = pixels.shape[:2]
        # tiles of at least 2 px: tiny test images keep working
        tiles = (max(1, min(CLAHE_TILES, width // 2)), max(1, min(CLAHE_TILES, height // 2)))
        clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=tiles)
        return clahe.apply(stretch(pixels))
    return cv2.equalizeHist(pixels) if pixels.dtype == np.uint8 else _equalize16(pixels)
