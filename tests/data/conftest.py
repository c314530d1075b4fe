"""Fixtures for the data tests: tiny PNG/DICOM writers and the real sample folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-99887766",
    "PatientBirthDate": "19450317",
    "InstitutionName": "Saint Example General Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "OperatorsName": "Tech^Alice",
}


@pytest.fixture
def real_data() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real sample data not found at {REAL}")
    return REAL.resolve()


def random_image(size: int = 32, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    high = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(seed).integers(0, high, (size, size), dtype=np.int64).astype(dtype)


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits: int = 8,
    slope: float | None = None,
    intercept: float | None = None,
    with_pixels: bool = True,
    tags: dict[str, str] | None = None,
) -> Path:
    """An uncompressed single-frame grayscale DICOM with optional identifying ``tags``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.ViewPosition = "PA"
    for key, value in (tags or {}).items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if with_pixels:
        dtype = np.uint8 if bits <= 8 else np.uint16
        ds.PixelData = pixels.astype(dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path
