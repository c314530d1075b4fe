"""Kermany pediatric CXR set: ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg``.

``diagnosis`` is normal, or bacterial / viral from the pneumonia file name
(``person1946_bacteria_4874.jpeg``, ``person1_virus_6.jpeg``); ``abnormal`` is 1 for pneumonia.
``patient_id`` is ``personN`` for pneumonia and ``[NORMAL2-]IM-####`` for normal images; the
dataset's own split is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

from umsrep.data.importers._base import IMPORTERS, Candidate, Candidates
from umsrep.data.importers._layout import find_dir

_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+$", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-\d+$", re.IGNORECASE)
_SUFFIXES = {".jpeg", ".jpg", ".png"}


def _label(path: Path, folder: str) -> tuple[str, str] | str:
    """Return ``(patient_id, diagnosis)`` or a quarantine reason."""
    if folder == "NORMAL":
        match = _NORMAL.match(path.stem)
        return (match.group(1) if match else path.stem, "normal")
    match = _PERSON.match(path.stem)
    if not match:
        return ("unknown label: pneumonia file name has neither 'bacteria' nor 'virus' "
                "(expected personN_bacteria_M or personN_virus_M); rename it")
    kind = match.group(2).lower()
    return match.group(1), "bacterial" if kind == "bacteria" else "viral"


@IMPORTERS.register("kermany")
def import_kermany(root: Path, dataset: str = "kermany") -> Candidates:
    """Read Kermany images with ``diagnosis``, ``abnormal`` and the dataset's own split."""
    base = find_dir(root, "chest_xray", ".")
    found = Candidates(items=[], label_columns=["abnormal", "diagnosis"])
    splits = [s for s in ("train", "val", "test") if (base / s).is_dir()]
    if not splits:
        raise FileNotFoundError(f"{base}: no train/val/test folders; point at chest_xray/")
    for split in splits:
        for sub in sorted(p for p in (base / split).iterdir() if p.is_dir()):
            if sub.name not in ("NORMAL", "PNEUMONIA"):
                found.quarantine.append(
                    (str(sub), "unknown label folder (expected NORMAL or PNEUMONIA); rename it")
                )
                continue
            for path in sorted(p for p in sub.iterdir() if p.is_file()):
                if path.name.startswith(".") or path.suffix.lower() not in _SUFFIXES:
                    found.quarantine.append((str(path), "not a .jpeg/.jpg/.png image; remove it"))
                    continue
                label = _label(path, sub.name)
                if isinstance(label, str):
                    found.quarantine.append((str(path), label))
                    continue
                patient, diagnosis = label
                row = {"sample_id": path.stem, "patient_id": patient,
                       "dataset": dataset, "split": split, "diagnosis": diagnosis,
                       "abnormal": int(diagnosis != "normal")}
                found.items.append(Candidate(row, path))
    return found
