"""Generic CSV import, how private sets (e.g. Doppler echo) and synthetic data get in.

CSV columns:

- ``image_path``  relative to the CSV's folder, or absolute (required)
- ``mask_path``   same; empty = no mask (optional)
- ``patient_id``  (required)
- ``sample_id``   (optional; default the image file stem)
- ``split``       train / val / test (optional)
- every other column is a label column, unless listed in option ``metadata=[...]``.

Option ``dataset`` defaults to the CSV file stem. Integer-valued label columns become nullable
Int64, others string; empty cells are missing labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from umsrep.data.importers._base import IMPORTERS, Candidate, Candidates
from umsrep.data.manifest import SPLITS

_FIXED = ("image_path", "mask_path", "patient_id", "sample_id", "split")


def _resolve(base: Path, value: object) -> Path | None:
    if value is None or pd.isna(value) or str(value).strip() == "":
        return None
    path = Path(str(value).strip())
    return path if path.is_absolute() else base / path


@IMPORTERS.register("generic")
def import_generic(
    root: Path, dataset: str | None = None, metadata: Sequence[str] | str = ()
) -> Candidates:
    """Read a CSV listing images, optional masks, patient ids and label columns."""
    if root.is_dir():
        raise ValueError(f"{root}: the generic importer takes a CSV file, not a folder")
    table = pd.read_csv(root, dtype=str, keep_default_na=False, na_values=[""])
    for col in ("image_path", "patient_id"):
        if col not in table.columns:
            raise ValueError(f"{root}: required column {col!r} missing; add it to the CSV header")
    if isinstance(metadata, str):
        metadata = [m for m in metadata.split(",") if m]
    unknown = [m for m in metadata if m not in table.columns]
    if unknown:
        raise ValueError(f"{root}: metadata column(s) {unknown} are not in the CSV header")
    labels = [c for c in table.columns if c not in _FIXED and c not in metadata]
    found = Candidates(items=[], label_columns=labels)
    dataset = dataset or root.stem
    base = root.parent
    for i, rec in enumerate(table.to_dict("records")):
        where = f"{root} row {i + 2}"  # +2: header line and 1-based numbering
        image = _resolve(base, rec["image_path"])
        if image is None or pd.isna(rec["patient_id"]):
            found.quarantine.append((where, "empty image_path or patient_id; fill it in"))
            continue
        split = rec.get("split")
        if split is not None and not pd.isna(split) and split not in SPLITS:
            found.quarantine.append(
                (str(image), f"{where}: split {split!r} is not train/val/test; fix the cell")
            )
            continue
        mask = _resolve(base, rec.get("mask_path"))
        sid = rec.get("sample_id")
        row = {"sample_id": image.stem if sid is None or pd.isna(sid) else sid,
               "patient_id": rec["patient_id"], "dataset": dataset,
               "split": None if split is None or pd.isna(split) else split}
        row.update({c: rec[c] for c in labels})
        row.update({c: rec[c] for c in metadata})
        found.items.append(Candidate(row, image, [mask] if mask is not None else []))
    return found
