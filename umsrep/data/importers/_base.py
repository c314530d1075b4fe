"""Machinery shared by the importers: candidate rows, per-file validation and quarantine.

An importer only reads a dataset's layout and labels; it returns ``Candidates``. Checking that
each image (and mask) decodes, is not blank and matches its mask happens here, once, for all
datasets, on all cores for large imports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from umsrep.data.io import ImageDecodeError, binarize_mask, read_image
from umsrep.registry import Registry

log = logging.getLogger(__name__)

IMPORTERS: Registry = Registry(
    "importer",
    "Dataset importers: fn(root: Path, **options) -> Candidates (rows to check, label "
    "columns, entries already quarantined). Registered by dataset name.",
)

_PARALLEL_MIN_ROWS = 64


@dataclass
class Candidate:
    """One image proposed by an importer, before its files are checked.

    ``row`` holds the manifest columns except image/mask paths and size metadata;
    ``mask_parts`` are mask files merged (logical OR) into one mask, e.g. Montgomery's
    left and right lung masks; one part means the file is used as is. ``extra_masks`` does the
    same for further segmentation columns (``mask_<name>_path``, e.g. JSRT's heart, clavicles).
    ``masks_any_scale``: masks may be stored at another resolution than the image, with its
    aspect ratio (SCR's JSRT masks are 1024 px for 2048 px images); the cache and original-size
    scoring resize them to the image.
    """

    row: dict[str, object]
    image_path: Path
    mask_parts: list[Path] = field(default_factory=list)
    extra_masks: dict[str, list[Path]] = field(default_factory=dict)
    masks_any_scale: bool = False


@dataclass
class Candidates:
    """What an importer found: rows to check, label columns, and entries already quarantined."""

    items: list[Candidate]
    label_columns: list[str]
    quarantine: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Checked:
    row: dict[str, object] | None
    quarantine: list[tuple[str, str]]
    notes: list[str]
    merged: dict[str, np.ndarray] = field(default_factory=dict)  # manifest column -> 0/1 mask


def _same_aspect(mask: tuple[int, ...], image: tuple[int, ...]) -> bool:
    """True when ``mask`` is ``image`` scaled, to within a pixel of rounding."""
    return abs(mask[1] - mask[0] * image[1] / image[0]) <= 1


def _check_mask(part: Path, shape: tuple[int, ...],
                any_scale: bool = False) -> tuple[np.ndarray, str | None]:
    arr, _ = read_image(part)
    if arr.shape != shape and not (any_scale and _same_aspect(arr.shape, shape)):
        need = "match their image" + (" in aspect ratio" if any_scale else "")
        raise ImageDecodeError(
            f"{part}: mask is {arr.shape[1]}x{arr.shape[0]}, image is {shape[1]}x{shape[0]}; "
            f"masks must {need}"
        )
    mask, was_binary = binarize_mask(arr)
    note = None if was_binary else f"{part}: mask is not strictly binary; binarized at half its max"
    return mask, note


def check_candidate(cand: Candidate) -> _Checked:
    """Decode the image and its mask parts; return the finished row or why it is quarantined."""
    try:
        image, meta = read_image(cand.image_path)
    except ImageDecodeError as exc:
        return _Checked(None, [(str(cand.image_path), str(exc))], [])
    if int(image.min()) == int(image.max()):
        reason = (
            f"{cand.image_path}: image is constant (every pixel = {int(image.min())}), "
            "a blank or failed export; re-export it or remove it"
        )
        return _Checked(None, [(str(cand.image_path), reason)], [])
    notes: list[str] = []
    row = dict(cand.row)
    row.update(meta)
    row["image_path"] = str(cand.image_path.resolve())
    row["height"], row["width"] = int(image.shape[0]), int(image.shape[1])
    merged: dict[str, np.ndarray] = {}
    for column, parts in {"mask_path": cand.mask_parts, **cand.extra_masks}.items():
        masks = []
        for part in parts:
            try:
                mask, note = _check_mask(part, image.shape, cand.masks_any_scale)
            except ImageDecodeError as exc:
                return _Checked(None, [(str(part), str(exc))], [])
            masks.append(mask)
            if note:
                notes.append(note)
        if len(masks) == 1:
            row[column] = str(parts[0].resolve())
        elif masks:
            merged[column] = _merge(masks, image.shape)
    return _Checked(row, [], notes, merged)


def _merge(masks: list[np.ndarray], image_shape: tuple[int, ...]) -> np.ndarray:
    """Logical OR of mask parts; parts stored at different scales meet at the image's size."""
    if len({m.shape for m in masks}) > 1:
        size = (image_shape[1], image_shape[0])
        masks = [cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in masks]
    return np.maximum.reduce(masks)


def check_all(items: list[Candidate], workers: int | None = None) -> Iterable[_Checked]:
    """Check candidates in input order, on threads when there are many (decoding releases the
    GIL; a forked process pool can deadlock on OpenCV's thread pool)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(items) < _PARALLEL_MIN_ROWS:
        return map(check_candidate, items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check_candidate, items))


def write_merged_mask(mask: np.ndarray, folder: Path, sample_id: str, name: str = "mask") -> Path:
    """Write a merged 0/1 mask as a 0/255 PNG ``folder/<sample_id>_<name>.png``; return its path.

    ``name`` is the mask's task column: ``mask`` (lungs) or ``mask_<organ>``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sample_id}_{name}.png"
    if not cv2.imwrite(str(path), mask * 255):
        raise OSError(f"{path}: cannot write merged mask; check the output folder is writable")
    return path.resolve()
