"""Decode medical images and masks into plain 2-D numpy arrays.

``load_image`` reads PNG, JPEG, TIFF, BMP (through OpenCV) and DICOM (through pydicom, including
JPEG-compressed transfer syntaxes via Pillow) and returns one grayscale array:

- 8-bit sources -> ``uint8`` on the 0-255 scale;
- 9-16-bit sources -> ``uint16`` on the full 0-65535 scale (DICOM stored values are rescaled
  by ``65535 / (2**BitsStored - 1)`` so that dividing by 65535 always gives 0-1).

Colour images are converted to gray. DICOM pixel data gets RescaleSlope/RescaleIntercept and
MONOCHROME1 inversion (so bone is always bright). Only non-identifying DICOM tags are ever read
into the returned metadata (``SAFE_DICOM_TAGS``); names, IDs, dates and institutions are not.

Every failure raises ``ImageDecodeError`` with a sentence a person can act on.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pydicom.pixels  # imported eagerly: concurrent first imports in threads can deadlock
from pydicom.errors import InvalidDicomError

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}

# DICOM attribute -> manifest metadata column. Nothing else from a DICOM header is ever kept.
SAFE_DICOM_TAGS: dict[str, str] = {
    "ViewPosition": "view_position",
    "Modality": "modality",
    "BitsStored": "bits_stored",
    "PhotometricInterpretation": "photometric_interpretation",
}


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image; the message says why and what to do."""


def is_dicom(path: Path, head: bytes | None = None) -> bool:
    """True when ``path`` has a DICOM suffix or the ``DICM`` magic at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if head is None:
        with open(path, "rb") as fh:
            head = fh.read(132)
    return len(head) >= 132 and head[128:132] == b"DICM"


def _check_complete(path: Path, data: bytes) -> None:
    """Raise when a PNG or JPEG stream lacks its end marker (a truncated download or copy)."""
    if data.startswith(b"\x89PNG") and b"IEND" not in data[-64:]:
        raise ImageDecodeError(f"{path}: PNG is truncated (no IEND chunk); re-export or re-copy it")
    if data.startswith(b"\xff\xd8") and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageDecodeError(
            f"{path}: JPEG is truncated (no end-of-image marker); re-export or re-copy it"
        )


def _to_gray(arr: np.ndarray, path: Path) -> np.ndarray:
    """Collapse colour channels (OpenCV BGR/BGRA order) to one gray channel."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if arr.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(arr, code)
    raise ImageDecodeError(f"{path}: unsupported image shape {arr.shape}; expected 2-D or HxWxC")


def _to_uint(arr: np.ndarray, path: Path) -> np.ndarray:
    """Map any integer/float array to uint8 or uint16; other depths are min-max scaled to 16 bit."""
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ImageDecodeError(f"{path}: image holds NaN or infinite values; re-export it")
    lo, hi = float(arr.min()), float(arr.max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return np.round((arr - lo) * scale).astype(np.uint16)


def read_dicom(path: str | Path) -> tuple[np.ndarray, dict[str, object]]:
    """Decode one DICOM file.

    Returns ``(pixels, metadata)``: pixels 2-D uint8 (BitsStored <= 8) or uint16 (full 0-65535
    scale), MONOCHROME1 inverted, slope/intercept applied; metadata only ``SAFE_DICOM_TAGS``.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ImageDecodeError(
            f"{path}: not a readable DICOM file ({type(exc).__name__}); re-export it from the PACS"
        ) from None
    if "PixelData" not in ds:
        raise ImageDecodeError(
            f"{path}: DICOM has no pixel data (a structured report or header-only file); "
            "remove it from the image folder"
        )
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad or unsupported pixel data
        raise ImageDecodeError(
            f"{path}: DICOM pixel data cannot be decoded ({type(exc).__name__}: {exc}); "
            "JPEG Lossless, JPEG-LS and JPEG 2000 need the dicom extra (pip install "
            "'umsrep[dicom]', GDCM), or re-export the file uncompressed"
        ) from None
    meta = {col: ds.get(tag) for tag, col in SAFE_DICOM_TAGS.items()}
    meta = {k: (str(v) if k != "bits_stored" else v) for k, v in meta.items() if v is not None}
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim == 3 and raw.shape[-1] == 3:  # pydicom returns colour as RGB
        return _to_gray(raw[..., ::-1].copy(), path).astype(np.uint8), meta
    if raw.ndim != 2:
        raise ImageDecodeError(
            f"{path}: DICOM pixel array has shape {raw.shape} (multi-frame?); "
            "export one frame per file"
        )
    bits = int(ds.get("BitsStored", raw.dtype.itemsize * 8))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    lo_stored = -(2 ** (bits - 1)) if signed else 0
    hi_stored = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    lo, hi = sorted((lo_stored * slope + intercept, hi_stored * slope + intercept))
    arr = raw.astype(np.float64) * slope + intercept
    if photometric == "MONOCHROME1":
        arr = lo + hi - arr
    unit = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    unit = np.clip(unit, 0.0, 1.0)
    if bits <= 8:
        return np.round(unit * 255).astype(np.uint8), meta
    return np.round(unit * 65535).astype(np.uint16), meta


def read_image(path: str | Path) -> tuple[np.ndarray, dict[str, object]]:
    """Decode any supported image to ``(2-D uint8|uint16 pixels, safe metadata)``.

    Raises ``ImageDecodeError`` for a missing, empty, truncated, corrupt or non-image file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageDecodeError(f"{path}: file not found; restore it or remove its row")
    if path.stat().st_size == 0:
        raise ImageDecodeError(f"{path}: file is empty (0 bytes); re-export or re-download it")
    if is_dicom(path):
        return read_dicom(path)
    data = path.read_bytes()
    if is_dicom(path, data[:132]):
        return read_dicom(path)
    _check_complete(path, data)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageDecodeError(
            f"{path}: cannot be decoded as an image (corrupt or not an image file); "
            "re-export it as PNG, JPEG, TIFF or DICOM"
        )
    return _to_uint(_to_gray(arr, path), path), {}


def load_image(path: str | Path) -> np.ndarray:
    """Load one image as a 2-D grayscale uint8 (0-255) or uint16 (0-65535) array [H, W]."""
    return read_image(path)[0]


def binarize_mask(arr: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return ``(mask uint8 0/1, was_binary)``: foreground is ``> 0.5 * max`` (``>127`` for 0/255)."""
    peak = arr.max() if arr.size else 0
    if peak == 0:
        return np.zeros(arr.shape, np.uint8), True
    was_binary = bool(np.isin(arr, (0, peak)).all())
    return (arr > 0.5 * float(peak)).astype(np.uint8), was_binary


def load_mask(path: str | Path) -> np.ndarray:
    """Load a segmentation mask as a 2-D uint8 array of 0/1 [H, W] (binarized at half its max)."""
    return binarize_mask(load_image(path))[0]
