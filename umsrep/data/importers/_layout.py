"""Small helpers for finding a dataset's folder whatever level the user points at."""

from __future__ import annotations

from pathlib import Path


def find_dir(root: Path, *candidates: str) -> Path:
    """Return the first existing ``root/<candidate>`` (candidates may be nested paths).

    Lets a user pass either the dataset's top folder or the folder above it.
    """
    for rel in candidates:
        path = root / rel
        if path.is_dir():
            return path
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"{root}: expected one of these folders: {tried}; check the path")
