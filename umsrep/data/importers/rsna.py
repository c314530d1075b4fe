"""RSNA Pneumonia Detection: ``stage_2_train_images/<patientId>.dcm`` + ``stage_2_train_labels.csv``.

The labels CSV has one row per opacity box (several rows for a patient with several boxes):
``abnormal`` is ``Target``, ``boxes`` a JSON list of ``[x, y, w, h]`` (``"[]"`` when Target is 0).
The optional ``stage_2_detailed_class_info.csv`` adds ``rsna_class``. ``patientId`` is already an
anonymous UID; no DICOM identifying tag is read (see ``umsrep.data.io.SAFE_DICOM_TAGS``).
DICOM files with no label row are imported with missing labels (usable for pretraining).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

from umsrep.data.importers._base import IMPORTERS, Candidate, Candidates
from umsrep.data.importers._layout import find_dir

log = logging.getLogger(__name__)

LABELS_CSV = "stage_2_train_labels.csv"
CLASS_CSV = "stage_2_detailed_class_info.csv"


def _find_csv(base: Path, name: str) -> Path | None:
    for path in (base / name, base.parent / name):
        if path.is_file():
            return path
    return None


def _patient_labels(group: pd.DataFrame, csv: Path) -> tuple[int, str] | str:
    """``(abnormal, boxes_json)`` for one patient's label rows, or a quarantine reason."""
    targets = set(pd.to_numeric(group["Target"], errors="coerce").tolist())
    if not targets <= {0, 1} or len(targets) != 1:
        return (f"unknown label: Target values {sorted(map(str, targets))} in {csv.name} "
                "(expected one of 0 or 1 per patient); fix the label rows")
    target = int(targets.pop())
    boxes = []
    for rec in group[["x", "y", "width", "height"]].itertuples(index=False):
        vals = [float(v) for v in rec]
        if target == 1 and not any(math.isnan(v) for v in vals):
            boxes.append(vals)
    if target == 1 and not boxes:
        return f"Target is 1 but no box coordinates in {csv.name}; fix the label rows"
    return target, json.dumps(boxes)


@IMPORTERS.register("rsna")
def import_rsna(root: Path, dataset: str = "rsna") -> Candidates:
    """Read RSNA DICOMs with ``abnormal``, ``boxes`` and (when present) ``rsna_class``."""
    base = root if (root / "stage_2_train_images").is_dir() else find_dir(root, "rsna-pneumonia")
    images = find_dir(base, "stage_2_train_images")
    labels_csv = _find_csv(base, LABELS_CSV)
    if labels_csv is None:
        raise FileNotFoundError(f"{base}: {LABELS_CSV} not found; put it beside the image folder")
    labels = pd.read_csv(labels_csv, dtype={"patientId": str})
    classes_csv = _find_csv(base, CLASS_CSV)
    classes: dict[str, str] = {}
    label_columns = ["abnormal", "boxes"]
    if classes_csv is not None:
        info = pd.read_csv(classes_csv, dtype=str).drop_duplicates("patientId")
        classes = dict(zip(info["patientId"], info["class"], strict=True))
        label_columns.append("rsna_class")
    found = Candidates(items=[], label_columns=label_columns)
    files = {p.stem: p for p in sorted(images.iterdir()) if p.is_file()}
    for pid, group in labels.groupby("patientId", sort=True):
        path = files.pop(pid, None)
        if path is None:
            found.quarantine.append(
                (str(images / f"{pid}.dcm"),
                 f"label row in {labels_csv.name} but the DICOM file is missing; restore it")
            )
            continue
        got = _patient_labels(group, labels_csv)
        if isinstance(got, str):
            found.quarantine.append((str(path), got))
            continue
        row = {"sample_id": pid, "patient_id": pid, "dataset": dataset, "split": None,
               "abnormal": got[0], "boxes": got[1]}
        if classes_csv is not None:
            row["rsna_class"] = classes.get(pid)
        found.items.append(Candidate(row, path))
    for pid, path in files.items():
        log.info("%s: no row in %s; imported with missing labels", path, labels_csv.name)
        row = {"sample_id": pid, "patient_id": pid, "dataset": dataset, "split": None,
               "abnormal": None, "boxes": None}
        if classes_csv is not None:
            row["rsna_class"] = classes.get(pid)
        found.items.append(Candidate(row, path))
    return found
