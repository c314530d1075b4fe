"""Synthetic CXR-like and Doppler-like datasets: the embedded default that runs anywhere.

``synthesize(kind, n, size, seed, out_dir)`` writes PNG images and masks plus a generic
``labels.csv`` under ``out_dir`` and imports them through the same generic importer as real
data, so the manifest it returns is indistinguishable in form from a real import.

Generators are registered by name in ``SYNTHESIZERS``; each takes ``(n, size, seed)`` and
returns a ``SyntheticBatch`` (uint8 images 0-255, {0,1} masks, a label DataFrame).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from umsrep.data.importers import run_import
from umsrep.data.synthetic._common import SyntheticBatch
from umsrep.data.synthetic.cxr import generate_cxr
from umsrep.data.synthetic.doppler import generate_doppler
from umsrep.registry import Registry

if TYPE_CHECKING:
    from umsrep.data.importers import ImportReport

__all__ = [
    "SYNTHESIZERS",
    "SyntheticBatch",
    "generate",
    "generate_cxr",
    "generate_doppler",
    "synthesize",
    "write_batch",
]

log = logging.getLogger(__name__)

SYNTHESIZERS: Registry[Callable[[int, int, int], SyntheticBatch]] = Registry(
    "synthetic generator",
    doc="name -> fn(n, size, seed) returning a SyntheticBatch of n images of size x size.",
)
SYNTHESIZERS.register("cxr")(generate_cxr)
SYNTHESIZERS.register("doppler")(generate_doppler)


def generate(kind: str, n: int, size: int = 64, seed: int = 0) -> SyntheticBatch:
    """Generate a batch in memory with the generator registered as ``kind``."""
    return SYNTHESIZERS.get(kind)(n, size, seed)


def write_batch(batch: SyntheticBatch, out_dir: Path) -> Path:
    """Write images (``images/<sample_id>.png``), masks (``masks/<sample_id>_mask.png``, 0/255)
    and the generic-importer CSV (``labels.csv``, paths relative to it); return the CSV path."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rows = batch.labels.copy()
    rows.insert(0, "image_path", [f"images/{s}.png" for s in rows.sample_id])
    rows.insert(1, "mask_path", [f"masks/{s}_mask.png" for s in rows.sample_id])
    for image, mask, image_path, mask_path in zip(
        batch.images, batch.masks, rows.image_path, rows.mask_path, strict=True
    ):
        for array, rel in ((image, image_path), (mask * 255, mask_path)):
            if not cv2.imwrite(str(out_dir / rel), array):
                raise OSError(f"{out_dir / rel}: OpenCV could not write the PNG; check the folder")
    csv_path = out_dir / "labels.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    rows.to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(csv_path)
    return csv_path


def synthesize(kind: str, n: int, size: int = 64, seed: int = 0, *, out_dir: str | Path) -> Path:
    """Generate ``n`` synthetic ``kind`` ("cxr" or "doppler") images of ``size`` px with ``seed``,
    write them under ``out_dir`` and import them as dataset ``synthetic-<kind>``.

    Returns the manifest path, ``out_dir / "manifest.parquet"``. Same seed, same bytes.
    """

    out_dir = Path(out_dir)
    batch = generate(kind, n, size, seed)
    csv_path = write_batch(batch, out_dir)
    manifest = out_dir / "manifest.parquet"
    report = run_import("generic", csv_path, manifest, dataset=f"synthetic-{kind}")
    log.info("synthesized %d %s images (%d px, seed %d) into %s", n, kind, size, seed, manifest)
    return _check_report(report)


def _check_report(report: ImportReport) -> Path:
    """Synthetic files are valid by construction: a quarantined row is a bug, so raise."""
    if report.quarantine:
        listed = "\n".join(f"  {path}: {reason}" for path, reason in report.quarantine[:3])
        raise RuntimeError(
            f"{report.manifest_path}: the importer quarantined {len(report.quarantine)} "
            f"synthetic file(s), see {report.quarantine_path}:\n{listed}"
        )
    return report.manifest_path
