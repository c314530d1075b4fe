"""Montgomery CXR set: ``MontgomerySet/CXR_png/MCUCXR_####_L.png`` (L = 0 normal, 1 TB).

``ManualMask/leftMask/<name>`` and ``ManualMask/rightMask/<name>`` are merged (logical OR) into
one lung mask written beside the manifest. An image with only one of the two masks is imported
without a mask and the missing half is listed in the quarantine file.
"""

from __future__ import annotations

import re
from pathlib import Path

from umsrep.data.importers._base import IMPORTERS, Candidate, Candidates
from umsrep.data.importers._layout import find_dir

_NAME = re.compile(r"^(MCUCXR_\d{4})_(\d+)$")


@IMPORTERS.register("montgomery")
def import_montgomery(root: Path, dataset: str = "montgomery") -> Candidates:
    """Read Montgomery images, ``abnormal`` from the file name, and merged left+right masks."""
    base = find_dir(root, "MontgomerySet", ".")
    images = find_dir(base, "CXR_png")
    left_dir, right_dir = base / "ManualMask" / "leftMask", base / "ManualMask" / "rightMask"
    found = Candidates(items=[], label_columns=["abnormal"])
    for path in sorted(p for p in images.iterdir() if p.is_file()):
        match = _NAME.match(path.stem)
        if path.suffix.lower() != ".png" or not match:
            found.quarantine.append(
                (str(path), "file name does not follow MCUCXR_####_L.png; rename it or move it out")
            )
            continue
        patient, label = match.groups()
        if label not in ("0", "1"):
            found.quarantine.append(
                (str(path), f"unknown label {label!r} in the file name (expected _0 or _1)")
            )
            continue
        left, right = left_dir / path.name, right_dir / path.name
        parts = [p for p in (left, right) if p.is_file()]
        if len(parts) == 1:
            missing = right if parts[0] == left else left
            found.quarantine.append(
                (str(missing), f"lung mask half missing, so {path.name} is imported without a "
                 "mask; add the missing left/right mask to use it for segmentation")
            )
            parts = []
        row = {"sample_id": path.stem, "patient_id": patient, "dataset": dataset,
               "split": None, "abnormal": int(label)}
        found.items.append(Candidate(row, path, parts))
    return found
