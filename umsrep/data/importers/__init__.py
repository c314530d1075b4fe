"""Dataset importers: each reads one dataset's original layout into a manifest.

``IMPORTERS`` maps a name to ``fn(root: Path, **options) -> Candidates`` (see ``_base``);
``run_import`` runs one, checks every file, and writes ``OUT.parquet`` (the manifest),
``OUT.quarantine.csv`` (``path, reason`` of every file set aside, written even when empty) and,
for datasets whose masks are merged from parts (Montgomery, JSRT), ``OUT.masks/<sample_id>_mask.png``
(``<sample_id>_mask_<name>.png`` for a further mask column ``mask_<name>_path``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from umsrep.data.importers._base import (
    IMPORTERS,
    Candidate,
    Candidates,
    check_all,
    write_merged_mask,
)
from umsrep.data.manifest import load_manifest, save_manifest

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    """The result of one import: the manifest written and every file set aside, with why."""

    manifest: pd.DataFrame
    quarantine: list[tuple[str, str]]
    manifest_path: Path
    quarantine_path: Path


def _write_quarantine(entries: list[tuple[str, str]], path: Path) -> None:
    frame = pd.DataFrame(entries, columns=["path", "reason"])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _collect(found: Candidates, out: Path, workers: int | None):
    rows: list[dict[str, object]] = []
    quarantine = list(found.quarantine)
    seen: set[str] = set()
    masks_dir = out.with_name(out.stem + ".masks")
    items: list[Candidate] = []
    for cand in found.items:
        sid = str(cand.row["sample_id"])
        if sid in seen:
            quarantine.append(
                (str(cand.image_path), f"duplicate sample_id {sid!r}; rename the file or set a "
                 "unique sample_id")
            )
            continue
        seen.add(sid)
        items.append(cand)
    for checked in check_all(items, workers):
        quarantine.extend(checked.quarantine)
        for note in checked.notes:
            log.info(note)
        if checked.row is None:
            continue
        for column, mask in checked.merged.items():
            checked.row[column] = str(write_merged_mask(
                mask, masks_dir, str(checked.row["sample_id"]), column[: -len("_path")]
            ))
        rows.append(checked.row)
    return rows, quarantine


def run_import(name: str, root: str | Path, out: str | Path, **options) -> ImportReport:
    """Import dataset ``name`` from ``root`` into the manifest ``out`` (``.parquet``).

    ``options`` go to the importer (e.g. ``dataset=``, ``metadata=`` for ``generic``), except
    ``workers`` (processes used to check files; default all cores). Bad files never stop the
    import: they are listed in the report and in ``OUT.quarantine.csv``.
    """
    importer = IMPORTERS.get(name)
    root, out = Path(root), Path(out)
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset folder not found; check the path")
    workers = options.pop("workers", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    found: Candidates = importer(root, **options)
    rows, quarantine = _collect(found, out, workers)
    frame = pd.DataFrame(rows)
    extra_masks = sorted({col for cand in found.items for col in cand.extra_masks})
    for col in ("sample_id", "patient_id", "dataset", "split", "image_path", "mask_path",
                *extra_masks):
        if col not in frame.columns:
            frame[col] = pd.Series([pd.NA] * len(frame), dtype="string")
    for col in found.label_columns:
        if col not in frame.columns:
            frame[col] = pd.Series([pd.NA] * len(frame), dtype="string")
    manifest_path = save_manifest(frame, out, found.label_columns)
    quarantine_path = out.with_name(out.stem + ".quarantine.csv")
    _write_quarantine(quarantine, quarantine_path)
    for path, reason in quarantine:
        log.warning("quarantined: %s", reason if path in reason else f"{path}: {reason}")
    log.info("imported %d, quarantined %d -> %s", len(frame), len(quarantine), manifest_path)
    return ImportReport(load_manifest(manifest_path), quarantine, manifest_path, quarantine_path)


# Register the built-in importers (each module decorates its function with IMPORTERS.register;
# the registry lives in _base, so they do not import this package back).
from umsrep.data.importers import generic, jsrt, kermany, montgomery, rsna, shenzhen  # noqa: E402, F401

__all__ = ["IMPORTERS", "Candidate", "Candidates", "ImportReport", "run_import"]
