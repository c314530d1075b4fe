"""JSRT with the SCR masks: ``JSRT/images/JPCxxNNN.png`` (``JPCLN`` nodule, ``JPCNN`` none).

``masks/<organ>/<name>`` for the SCR organs ``left lung``, ``right lung``, ``heart``,
``left clavicle``, ``right clavicle``. Left and right lung are merged (logical OR, as for
Montgomery) into ``mask_path``; the heart is ``mask_heart_path`` and the merged clavicles
``mask_clavicle_path`` (segmentation tasks ``mask_heart``, ``mask_clavicle``). The label is
``nodule`` (1 for ``JPCLN``, 0 for ``JPCNN``). A mask file that is missing leaves its column
empty (for a pair, both halves) and is listed in the quarantine file. Masks may be stored at
another resolution than the image (SCR's are 1024 px, JSRT's images 2048 px).
"""

from __future__ import annotations

import re
from pathlib import Path

from umsrep.data.importers._base import IMPORTERS, Candidate, Candidates
from umsrep.data.importers._layout import find_dir

_NAME = re.compile(r"^JPC(LN|NN)\d{3}$")
_NODULE = {"LN": 1, "NN": 0}
# manifest column -> SCR organ folders merged into it
_MASKS: dict[str, tuple[str, ...]] = {
    "mask_path": ("left lung", "right lung"),
    "mask_heart_path": ("heart",),
    "mask_clavicle_path": ("left clavicle", "right clavicle"),
}


def _mask_parts(masks: Path, name: str, quarantine: list[tuple[str, str]]) -> dict[str, list[Path]]:
    """Mask files of image ``name`` per column; a column with a missing file gets none."""
    parts: dict[str, list[Path]] = {}
    for column, organs in _MASKS.items():
        files = [masks / organ / name for organ in organs]
        missing = [f for f in files if not f.is_file()]
        for f in missing:
            quarantine.append(
                (
                    str(f),
                    f"{f.parent.name} mask missing, so {name} is imported with an empty "
                    f"{column}; add the file to use it for segmentation",
                )
            )
        parts[column] = [] if missing else files
    return parts


@IMPORTERS.register("jsrt")
def import_jsrt(root: Path, dataset: str = "jsrt") -> Candidates:
    """Read JSRT images, ``nodule`` from the file name, merged lung and clavicle masks, heart."""
    base = find_dir(root, "JSRT", ".")
    images = find_dir(base, "images")
    masks = base / "masks"
    found = Candidates(items=[], label_columns=["nodule"])
    for path in sorted(p for p in images.iterdir() if p.is_file()):
        match = _NAME.match(path.stem)
        if path.suffix.lower() != ".png" or not match:
            found.quarantine.append(
                (
                    str(path),
                    "file name does not follow JPCLN###.png or JPCNN###.png; rename it "
                    "or move it out",
                )
            )
            continue
        parts = _mask_parts(masks, path.name, found.quarantine)
        row = {
            "sample_id": path.stem,
            "patient_id": path.stem,
            "dataset": dataset,
            "split": None,
            "nodule": _NODULE[match.group(1)],
        }
        lungs = parts.pop("mask_path")
        found.items.append(Candidate(row, path, lungs, extra_masks=parts, masks_any_scale=True))
    return found
