"""Data pipeline benchmark (prints figures; not a test).

Measures, in one run on this machine:
- prepare throughput (images/s) of ``prepare_cache`` for PNG and for DICOM sources;
- cached-loader throughput (images/s) at 256x256, batch 16, next to a naive loader that decodes
  and resizes every image every epoch, and their ratio.
Targets (issue 2): cache >= 20x naive and >= 2,000 images/s on 2 cores.

    python bench/data_bench.py [--n 256] [--src-size 1024] [--workers N]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.dataset import CachedDataset, TaskLabel
from umsrep.data.importers import run_import
from umsrep.data.io import load_image


def _fake_cxr(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 200 - 120 * (np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.03)
                        + np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) / 0.03))
    return np.clip(base + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)


def _write_dicom(path: Path, pixels: np.ndarray) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _make_set(root: Path, kind: str, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = _fake_cxr(size, rng)
        name = f"{kind}{i:04d}." + ("png" if kind == "png" else "dcm")
        if kind == "png":
            cv2.imwrite(str(root / name), img)
        else:
            _write_dicom(root / name, img)
        rows.append({"image_path": name, "patient_id": f"p{i}", "abnormal": i % 2})
    pd.DataFrame(rows).to_csv(root / f"{kind}.csv", index=False)
    return run_import("generic", root / f"{kind}.csv", root / f"{kind}.parquet").manifest_path


class NaiveDataset(Dataset):
    """Decode + resize + mean-normalize every item, every epoch (what the cache replaces)."""

    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        img = cv2.resize(load_image(self.paths[i]), (self.size, self.size),
                         interpolation=cv2.INTER_CUBIC)
        x = torch.from_numpy(img.astype(np.float32) / 255)[None]
        return {"image": x - x.mean()}


def _loader_rate(ds: Dataset, epochs: int) -> float:
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=0)
    start, count = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            count += len(batch["image"])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images per source format")
    parser.add_argument("--src-size", type=int, default=1024, help="source image side (px)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    print(f"cores={os.cpu_count()} workers={args.workers} n={args.n} src={args.src_size}px "
          "-> 256px, batch 16")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        caches = {}
        for kind in ("png", "dicom"):
            manifest = _make_set(root, kind, args.n, args.src_size)
            start = time.perf_counter()
            caches[kind] = prepare_cache(manifest, 256, root / "cache", workers=args.workers)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            prepare_cache(manifest, 256, root / "cache", workers=args.workers)
            warm = time.perf_counter() - start
            print(f"prepare {kind:5s}: {args.n / cold:8.1f} images/s cold ({cold:.2f}s), "
                  f"warm rerun {warm * 1000:.0f} ms")
        cache = load_cache(caches["png"])
        cached = CachedDataset(cache, tasks={"abnormal": TaskLabel("abnormal")})
        naive = NaiveDataset(cache.index["image_path"].tolist(), 256)
        naive_rate = _loader_rate(naive, epochs=1)
        cached_rate = _loader_rate(cached, epochs=5)
        print(f"naive loader : {naive_rate:8.1f} images/s (decode+resize every epoch)")
        print(f"cached loader: {cached_rate:8.1f} images/s (memory-mapped cache)")
        print(f"ratio cached/naive: {cached_rate / naive_rate:.1f}x  (target >= 20x, "
              f">= 2000 images/s)")


if __name__ == "__main__":
    main()
