"""Compressed DICOM as PACS exports it: JPEG Lossless, JPEG-LS, JPEG 2000 and RLE decode with
the ``dicom`` extra (GDCM) to the same pixels as the uncompressed file; without a decoder the
file is quarantined with a line naming the extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.conftest import random_image, write_dicom
from umsrep.data.io import ImageDecodeError, read_image

gdcm = pytest.importorskip("gdcm", reason="the dicom extra (python-gdcm) is not installed")

SYNTAXES = {
    "jpeg_lossless": "JPEGLosslessProcess14_1",  # 1.2.840.10008.1.2.4.70
    "jpeg_ls": "JPEGLSLossless",  # 1.2.840.10008.1.2.4.80
    "jpeg2000": "JPEG2000Lossless",  # 1.2.840.10008.1.2.4.90
    "rle": "RLELossless",  # 1.2.840.10008.1.2.5
}


def compress(src: Path, dst: Path, syntax: str) -> Path:
    """``src`` re-encoded by GDCM in transfer syntax ``syntax`` (a gdcm.TransferSyntax name)."""
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return dst


@pytest.mark.parametrize("name", SYNTAXES)
@pytest.mark.parametrize("bits", [8, 12])
def test_lossless_compressed_dicom_decodes_to_the_uncompressed_pixels(tmp_path, name, bits):
    import pydicom

    if bits == 8:
        px = random_image(48, seed=3)
    else:
        px = (np.linspace(0, 4095, 48 * 48).reshape(48, 48) * 0.9 + 100).astype(np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", px, bits=bits)
    packed = compress(plain, tmp_path / f"{name}.dcm", SYNTAXES[name])
    syntax = pydicom.dcmread(packed, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert syntax.is_compressed, syntax
    expected, _ = read_image(plain)
    got, _ = read_image(packed)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_without_a_decoder_the_file_is_quarantined_naming_the_extra(tmp_path, monkeypatch):
    import pydicom

    packed = compress(write_dicom(tmp_path / "p.dcm", random_image(32)), tmp_path / "j.dcm",
                      SYNTAXES["jpeg_lossless"])

    def no_decoder(self, *args, **kwargs):
        raise RuntimeError("Unable to decode: no plugin for JPEG Lossless")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(ImageDecodeError, match=r"umsrep\[dicom\]"):
        read_image(packed)
