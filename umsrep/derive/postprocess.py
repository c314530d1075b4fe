"""Mask clean-up after thresholding: drop small islands, fill holes (pure numpy/OpenCV).

A lung field is one or two large connected regions without holes; what a small-data model gets
wrong at an external site is mostly islands (burned-in text labels, stomach gas) and holes.
``clean_mask`` removes every 8-connected component smaller than ``min_fraction`` of the largest
one, fills background regions that do not touch the image border (4-connected), then keeps only
the ``keep_largest`` largest 8-connected components (2 for lungs: a large false region, such as
"lung" in a black letterbox band, is beyond what ``min_fraction`` can remove without risking a
small true lung).
"""

from __future__ import annotations

import cv2
import numpy as np


def clean_mask(mask: np.ndarray, min_fraction: float = 0.0,
               fill_holes: bool = False, keep_largest: int = 0) -> np.ndarray:
    """bool ``[H, W]`` -> bool ``[H, W]``; the identity with the defaults.

    ``keep_largest``: 0 keeps every component; N keeps the N largest (ties: the first in
    raster order).
    """
    out = np.asarray(mask).astype(bool)
    if min_fraction > 0 and out.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(out.astype(np.uint8),
                                                               connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = np.flatnonzero(areas >= min_fraction * areas.max()) + 1
        out = np.isin(labels, keep)
    if fill_holes and out.any():
        background = (~out).astype(np.uint8)
        _, labels = cv2.connectedComponents(background, connectivity=4)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        holes = (background > 0) & ~np.isin(labels, border)
        out = out | holes
    if keep_largest > 0 and out.any():
        out = _largest_components(out, keep_largest)
    return out


def _largest_components(mask: np.ndarray, count: int) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n - 1 <= count:
        return mask
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")[:count] + 1
    return np.isin(labels, order)
