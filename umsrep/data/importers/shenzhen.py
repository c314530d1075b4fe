"""Shenzhen CXR set: ``ChinaSet_AllFiles/CXR_png/CHNCXR_####_L.png`` (L = 0 normal, 1 TB).

Lung masks, when present, are ``ChinaSet_AllFiles/mask/CHNCXR_####_L_mask.png`` (not every
image has one). One image per patient, so ``patient_id`` is ``CHNCXR_####``.
"""

from __future__ import annotations

import re
from pathlib import Path

from umsrep.data.importers._base import IMPORTERS, Candidate, Candidates
from umsrep.data.importers._layout import find_dir

_NAME = re.compile(r"^(CHNCXR_\d{4})_(\d+)$")


@IMPORTERS.register("shenzhen")
def import_shenzhen(root: Path, dataset: str = "shenzhen") -> Candidates:
    """Read Shenzhen images, the 0/1 ``abnormal`` label from the file name, and lung masks."""
    base = find_dir(root, "ChinaSet_AllFiles", ".")
    images = find_dir(base, "CXR_png")
    mask_dir = base / "mask"
    found = Candidates(items=[], label_columns=["abnormal"])
    for path in sorted(p for p in images.iterdir() if p.is_file()):
        match = _NAME.match(path.stem)
        if path.suffix.lower() != ".png" or not match:
            found.quarantine.append(
                (str(path), "file name does not follow CHNCXR_####_L.png; rename it or move it out")
            )
            continue
        patient, label = match.groups()
        if label not in ("0", "1"):
            found.quarantine.append(
                (str(path), f"unknown label {label!r} in the file name (expected _0 or _1)")
            )
            continue
        mask = mask_dir / f"{path.stem}_mask.png"
        row = {"sample_id": path.stem, "patient_id": patient, "dataset": dataset,
               "split": None, "abnormal": int(label)}
        found.items.append(Candidate(row, path, [mask] if mask.is_file() else []))
    return found
