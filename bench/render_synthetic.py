"""Render a grid of synthetic CXR and Doppler samples with their mask outlines to a PNG.

    python bench/render_synthetic.py [--size 128] [--per-row 6] [--seed 0] [-o bench/synthetic_samples.png]

Two rows per modality: the first row shows the images, the second the same images with the
mask outline (green) and the labels. Prints the output path and the generation rate.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from umsrep.data.synthetic import SyntheticBatch, generate_cxr, generate_doppler

_GREEN, _YELLOW = (40, 220, 40), (0, 220, 255)


def _pick(values: pd.Series, count: int, exclude: tuple[int, ...] = ()) -> list[int]:
    """``count`` indices taking each value of ``values`` in turn, so every class appears."""
    groups = [
        [int(i) for i in idx if i not in exclude] for idx in values.groupby(values).indices.values()
    ]
    picked: list[int] = []
    while len(picked) < count and any(groups):
        for g in groups:
            if g and len(picked) < count:
                picked.append(g.pop(0))
    return picked


def _tile(batch: SyntheticBatch, i: int, caption: str) -> tuple[np.ndarray, np.ndarray]:
    """(plain tile, tile with mask outline and caption), both BGR uint8."""
    plain = cv2.cvtColor(batch.images[i], cv2.COLOR_GRAY2BGR)
    outlined = plain.copy()
    contours, _ = cv2.findContours(batch.masks[i], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, _GREEN, 1)
    scale = plain.shape[0] / 256
    cv2.putText(
        outlined,
        caption,
        (3, int(18 * scale) + 4),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45 * scale + 0.15,
        _YELLOW,
        1,
        cv2.LINE_AA,
    )
    return plain, outlined


def _rows(batch: SyntheticBatch, indices: list[int], captions: list[str]) -> np.ndarray:
    tiles = [_tile(batch, i, c) for i, c in zip(indices, captions, strict=True)]
    pad = np.full((batch.images.shape[1], 2, 3), 255, np.uint8)
    top = np.hstack([x for t in tiles for x in (t[0], pad)])
    bottom = np.hstack([x for t in tiles for x in (t[1], pad)])
    return np.vstack([top, np.full((2, top.shape[1], 3), 255, np.uint8), bottom])


def render(size: int, per_row: int, seed: int) -> np.ndarray:
    """The whole grid as a BGR uint8 image."""
    cxr = generate_cxr(4 * per_row, size, seed)
    cxr_idx = _pick(cxr.labels.diagnosis, per_row)
    cxr_caps = [cxr.labels.diagnosis[i] for i in cxr_idx]
    dop = generate_doppler(8 * per_row, size, seed)
    quality = dop.labels.quality.fillna("-")
    dop_idx = _pick(dop.labels.flow, per_row // 2)
    dop_idx += _pick(quality, per_row - len(dop_idx), exclude=tuple(dop_idx))
    dop_caps = [f"{dop.labels.flow[i]} {quality[i]}" for i in dop_idx]
    a, b = _rows(cxr, cxr_idx, cxr_caps), _rows(dop, dop_idx, dop_caps)
    width = max(a.shape[1], b.shape[1])
    a, b = (
        np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in (a, b)
    )
    return np.vstack([a, np.full((6, width, 3), 255, np.uint8), b])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--per-row", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "-o", "--output", type=Path, default=Path(__file__).with_name("synthetic_samples.png")
    )
    args = parser.parse_args()
    grid = render(args.size, args.per_row, args.seed)
    cv2.imwrite(str(args.output), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    for name, gen in (("cxr", generate_cxr), ("doppler", generate_doppler)):
        start = time.perf_counter()
        gen(500, 64, 1)
        print(f"{name}: 500 images at 64 px in {time.perf_counter() - start:.2f} s")
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
