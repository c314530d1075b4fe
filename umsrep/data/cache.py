"""The preprocessing cache: every image decoded, grayscale and resized once, memory-mapped after.

``prepare_cache(manifest, size, out)`` writes ``out/<key16>/`` where ``key16`` is the first 16 hex
digits of a SHA-256 over the manifest rows (sample id, image and mask path), each file's size and
mtime, the size, the interpolation and the cache format version. The same inputs give the same
folder, so a warm rerun only stats the files and returns; changed inputs get a new folder. A
manifest whose other columns (labels, patient ids) differ from those the folder was built with
gets a sibling ``<key16>-<rows8>/``: the same arrays (hard links), its own index.

The folder holds:

- ``images.npy``  uint8 [N, S, S] on 0-255 (uint16 on 0-65535 when any source is >8-bit),
  resized with OpenCV (bicubic by default, as in the paper) after the ``fit`` (``stretch``, the
  paper's, or ``pad``: letterbox to a square first, ``umsrep.data.geometry``), after the
  ``contrast`` normalization of the original image (``none`` by default, ``umsrep.data.contrast``).
- ``masks.npy``   uint8 [N, S, S] of 0/1, nearest-neighbour resized; zeros where no mask.
- ``mask_<name>.npy`` the same for each further mask column ``mask_<name>_path`` of the
  manifest (e.g. JSRT's ``mask_heart.npy``), listed in ``meta.json`` under ``extra_masks``.
- ``index.parquet`` the manifest rows in cache order plus ``has_mask`` (bool) and
  ``has_mask_<name>`` per further mask column.
- ``quarantine.csv`` (``path, reason``) rows that failed to decode at prepare time.
- ``meta.json``   size, key, dtype, interpolation, count, created (written last: its presence
  marks a complete cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from umsrep.data.contrast import CONTRASTS, apply_contrast, contrast_key
from umsrep.data.geometry import FITS, to_square
from umsrep.data.io import ImageDecodeError, binarize_mask, read_image
from umsrep.data.manifest import load_manifest, mask_columns

log = logging.getLogger(__name__)

CACHE_VERSION = 1
INTERPOLATIONS = {
    "bicubic": cv2.INTER_CUBIC,
    "bilinear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}


@dataclass
class Cache:
    """A loaded cache: ``images``/``masks`` are read-only memory maps [N, S, S];
    ``extra_masks`` maps a further mask's task column (``mask_heart``) to its memory map."""

    images: np.ndarray
    masks: np.ndarray
    index: pd.DataFrame
    meta: dict
    path: Path
    extra_masks: dict[str, np.ndarray] = field(default_factory=dict)

    def mask_array(self, column: str) -> np.ndarray:
        """The masks [N, S, S] of a segmentation task's ``column`` (``mask`` or ``mask_<name>``)."""
        if column == "mask":
            return self.masks
        if column not in self.extra_masks:
            known = ", ".join(["mask", *self.extra_masks])
            raise KeyError(f"{self.path}: no mask column {column!r} in the cache (has: {known}); "
                           f"import the data with a {column}_path column")
        return self.extra_masks[column]


def _stat(path: object) -> list[int] | None:
    if path is None or pd.isna(path):
        return None
    try:
        st = os.stat(str(path))
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def cache_key(manifest: pd.DataFrame, size: int, interpolation: str, fit: str = "stretch",
              contrast: str = "none") -> str:
    """SHA-256 (hex) of the rows, the files' sizes+mtimes and the settings."""
    h = hashlib.sha256()
    # the defaults add nothing, so the keys of caches built before them stay valid
    settings = [CACHE_VERSION, size, interpolation] + ([fit] if fit != "stretch" else []) + (
        [f"contrast={contrast_key(contrast)}"] if contrast != "none" else [])
    h.update(json.dumps(settings).encode())
    for sid, img, mask in manifest[["sample_id", "image_path", "mask_path"]].itertuples(
        index=False
    ):
        mask = None if pd.isna(mask) else str(mask)
        h.update(json.dumps([str(sid), str(img), mask, _stat(img), _stat(mask)]).encode())
    for column in list(mask_columns(manifest.columns).values())[1:]:  # absent: key unchanged
        for sid, mask in manifest[["sample_id", column]].itertuples(index=False):
            mask = None if pd.isna(mask) else str(mask)
            h.update(json.dumps([column, str(sid), mask, _stat(mask)]).encode())
    return h.hexdigest()


def _square_mask(mask_path: str, image_shape: tuple[int, int], size: int, fit: str) -> np.ndarray:
    raw = binarize_mask(read_image(mask_path)[0])[0]
    if raw.shape != image_shape:  # a mask file of another size covers the same image
        raw = cv2.resize(raw, image_shape[::-1], interpolation=cv2.INTER_NEAREST)
    return to_square(raw, size, fit, cv2.INTER_NEAREST)


def _resize_one(job: tuple[str, tuple[str | None, ...], int, int, str, str]):
    """Worker: ``(image [S,S], [mask [S,S] or None per mask column])`` or ``(None, reason)``."""
    image_path, mask_paths, size, interp, fit, contrast = job
    try:
        image, _ = read_image(image_path)
        image_shape = image.shape[:2]
        image = to_square(apply_contrast(image, contrast), size, fit, interp)
        masks = [None if m is None else _square_mask(m, image_shape, size, fit)
                 for m in mask_paths]
        return image, masks
    except (ImageDecodeError, cv2.error, OSError) as exc:
        return None, str(exc)


def _results(jobs: list, workers: int):
    """Yield ``_resize_one`` results in job order, on ``workers`` threads.

    Threads, not processes: OpenCV/Pillow decoding and resizing release the GIL, so threads use
    every core without pickling arrays, re-importing the caller (spawn) or deadlocking on
    OpenCV's thread pool after fork.
    """
    bar = dict(total=len(jobs), desc="prepare", unit="img", mininterval=1.0)
    if workers <= 1 or len(jobs) < 32:
        yield from tqdm(map(_resize_one, jobs), **bar)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from tqdm(pool.map(_resize_one, jobs), **bar)


def _source_dtype(manifest: pd.DataFrame) -> np.dtype:
    bits = manifest.get("bits_stored")
    if bits is not None and (pd.to_numeric(bits, errors="coerce") > 8).any():
        return np.dtype(np.uint16)
    return np.dtype(np.uint8)


def _to_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if image.dtype == dtype:
        return image
    if dtype == np.uint16:  # 8-bit image in a 16-bit cache: 255 -> 65535
        return image.astype(np.uint16) * 257
    return (image.astype(np.float32) / 257.0).round().astype(np.uint8)


def _build(manifest: pd.DataFrame, size: int, interp: int, folder: Path, workers: int,
           fit: str = "stretch", contrast: str = "none") -> dict:
    n = len(manifest)
    columns = mask_columns(manifest.columns)  # task column -> manifest column, "mask" first
    jobs = [(str(image), tuple(None if pd.isna(m) else str(m) for m in ms), size, interp, fit,
             contrast)
            for image, *ms in manifest[["image_path", *columns.values()]].itertuples(index=False)]
    dtype = _source_dtype(manifest)
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", dtype, (n, size, size))
    files = {c: "masks.npy" if c == "mask" else f"{c}.npy" for c in columns}
    masks = {c: np.lib.format.open_memmap(folder / f, "w+", np.uint8, (n, size, size))
             for c, f in files.items()}
    good, has = [], {c: [] for c in columns}
    quarantine = []
    for i, (image, masks_or_reason) in enumerate(_results(jobs, workers)):
        if image is None:
            quarantine.append((jobs[i][0], masks_or_reason))
            continue
        if image.dtype == np.uint16 and dtype == np.uint8:
            dtype = np.dtype(np.uint16)
            images = _widen(images, folder, good)
        images[len(good)] = _to_dtype(image, dtype)
        for c, mask in zip(columns, masks_or_reason, strict=True):
            masks[c][len(good)] = 0 if mask is None else mask
            has[c].append(mask is not None)
        good.append(i)
    images.flush()
    for column in masks:
        masks[column].flush()
    del images, masks
    if len(good) < n:
        for f in ("images.npy", *files.values()):
            _truncate(folder / f, len(good))
    index = manifest.iloc[good].reset_index(drop=True)
    for c in columns:
        index[f"has_{c}"] = np.array(has[c], dtype=bool)
    index.to_parquet(folder / "index.parquet", index=False)
    pd.DataFrame(quarantine, columns=["path", "reason"]).to_csv(folder / "quarantine.csv", index=False)
    for path, reason in quarantine:
        log.warning("cache: quarantined %s: %s", path, reason)
    return {"count": len(good), "dtype": str(dtype), "quarantined": len(quarantine),
            "extra_masks": list(columns)[1:]}


def _widen(images: np.ndarray, folder: Path, good: list[int]) -> np.ndarray:
    """Switch the images array to uint16 when a >8-bit source appears mid-build."""
    wide = np.lib.format.open_memmap(folder / "images16.npy", "w+", np.uint16, images.shape)
    wide[: len(good)] = images[: len(good)].astype(np.uint16) * 257
    del images
    os.replace(folder / "images16.npy", folder / "images.npy")
    return wide


def _truncate(path: Path, count: int) -> None:
    """Rewrite ``path`` keeping its first ``count`` rows (after quarantined rows were skipped)."""
    full = np.load(path, mmap_mode="r")
    kept = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), "w+", full.dtype,
                                     (count, *full.shape[1:]))
    kept[:] = full[:count]
    kept.flush()
    del kept, full
    os.replace(path.with_suffix(".tmp.npy"), path)


def prepare_cache(
    manifest_path: str | Path,
    size: int = 256,
    out: str | Path = "cache",
    workers: int | None = None,
    interpolation: str = "bicubic",
    fit: str = "stretch",
    contrast: str = "none",
) -> Path:
    """Build (or reuse) the cache of ``manifest_path`` at ``size`` x ``size``; return its folder."""
    if fit not in FITS:
        raise ValueError(f"fit {fit!r} unknown; use one of {list(FITS)}")
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast {contrast!r} unknown; use one of {list(CONTRASTS)}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} unknown; use one of {list(INTERPOLATIONS)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    manifest = load_manifest(manifest_path)
    key = cache_key(manifest, size, interpolation, fit, contrast)
    folder = Path(out) / key[:16]
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("key") == key:
            log.info("cache hit: %s", folder)
            return _with_rows_of(folder, manifest, manifest_path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    start = time.perf_counter()
    try:
        built = _build(manifest, size, INTERPOLATIONS[interpolation], tmp,
                       workers or os.cpu_count() or 1, fit, contrast)
        meta = {"size": size, "key": key, "interpolation": interpolation, "fit": fit,
                "contrast": contrast,
                "version": CACHE_VERSION,
                "manifest": str(Path(manifest_path).resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.perf_counter() - start, 3), **built}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("cache built: %d images in %.1fs -> %s", meta["count"], meta["seconds"], folder)
    return folder


def _flag_columns(meta: dict) -> list[str]:
    """The ``has_*`` columns the cache adds to the manifest's rows (``has_mask``, and
    ``has_mask_<name>`` per further mask), not a manifest column that happens to start so."""
    return ["has_mask", *(f"has_{c}" for c in meta.get("extra_masks", []))]


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Equal columns and values, read as text (Parquet round trips change dtypes, not values)."""
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    text = [df.reset_index(drop=True).astype("string").fillna("<NA>") for df in (a, b)]
    return bool(text[0].equals(text[1]))


def _with_rows_of(folder: Path, manifest: pd.DataFrame, manifest_path: str | Path) -> Path:
    """``folder``, or a sibling sharing its arrays, whose index holds ``manifest``'s rows now.

    The cache key covers what the arrays are made of (paths, files, settings), not the labels
    and other columns of the manifest, so a manifest whose labels were corrected hits the cache
    of the old one. Its index would then serve the old labels: instead the new rows get a
    sibling folder ``<key16>-<rows8>`` with its own ``index.parquet`` and ``meta.json`` and the
    arrays hard-linked (copied where links fail), so nothing is decoded again and no other
    run's folder changes under it."""
    cached = pd.read_parquet(folder / "index.parquet")
    meta = json.loads((folder / "meta.json").read_text())
    flags = cached[[c for c in _flag_columns(meta) if c in cached.columns]]
    pairs = manifest[["sample_id", "image_path"]].astype(str).itertuples(index=False, name=None)
    row_of: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(pairs):
        row_of.setdefault(pair, i)
    kept = [row_of[pair] for pair in cached[["sample_id", "image_path"]].astype(str)
            .itertuples(index=False, name=None)]
    rows = manifest.iloc[kept].reset_index(drop=True)
    if _same_rows(cached.drop(columns=list(flags.columns)), rows):
        return folder
    digest = hashlib.sha256(pd.util.hash_pandas_object(
        rows.astype("string").fillna("<NA>"), index=False).values.tobytes())
    digest.update(json.dumps(list(rows.columns)).encode())
    sibling = folder.with_name(f"{folder.name}-{digest.hexdigest()[:8]}")
    if (sibling / "meta.json").is_file():
        log.info("cache hit: %s (the arrays of %s, this manifest's rows)", sibling, folder.name)
        return sibling
    tmp = sibling.with_name(f".{sibling.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for src in folder.iterdir():
            if src.suffix == ".npy" or src.name == "quarantine.csv":
                try:
                    os.link(src, tmp / src.name)
                except OSError:
                    shutil.copy2(src, tmp / src.name)
        pd.concat([rows, flags], axis=1).to_parquet(tmp / "index.parquet", index=False)
        meta |= {"manifest": str(Path(manifest_path).resolve()), "arrays_of": folder.name,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(sibling, ignore_errors=True)
        os.replace(tmp, sibling)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("cache: %s has the arrays of %s and this manifest's rows (labels changed)",
             sibling, folder.name)
    return sibling


def load_cache(path: str | Path) -> Cache:
    """Open a cache folder written by ``prepare_cache`` (arrays memory-mapped read-only)."""
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise ValueError(f"{path}: not a complete cache (no meta.json); run `umsrep data prepare`")
    meta = json.loads((path / "meta.json").read_text())
    images = np.load(path / "images.npy", mmap_mode="r")
    masks = np.load(path / "masks.npy", mmap_mode="r")
    index = pd.read_parquet(path / "index.parquet")
    extra = {c: np.load(path / f"{c}.npy", mmap_mode="r") for c in meta.get("extra_masks", [])}
    if any(len(a) != len(index) for a in (images, masks, *extra.values())):
        raise ValueError(f"{path}: images/masks/index lengths differ; delete it and prepare again")
    return Cache(images=images, masks=masks, index=index, meta=meta, path=path, extra_masks=extra)
