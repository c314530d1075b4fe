import cv2
import numpy as np
import pytest

from tests.data.conftest import random_image, write_dicom, write_png
from umsrep.data.io import ImageDecodeError, load_image, load_mask, read_image


def test_png_jpeg_tiff_load_as_2d_gray(tmp_path):
    gray = random_image(32)
    assert np.array_equal(load_image(write_png(tmp_path / "a.png", gray)), gray)
    assert np.array_equal(load_image(write_png(tmp_path / "a.tif", gray)), gray)
    color = np.dstack([gray, gray // 2, 255 - gray])
    out = load_image(write_png(tmp_path / "c.png", color))
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert np.array_equal(out, cv2.cvtColor(color, cv2.COLOR_BGR2GRAY))
    jpg = load_image(write_png(tmp_path / "a.jpg", gray))
    assert jpg.shape == (32, 32) and jpg.dtype == np.uint8


def test_16bit_png_stays_uint16(tmp_path):
    img = random_image(32, dtype=np.uint16)
    out = load_image(write_png(tmp_path / "w.png", img))
    assert out.dtype == np.uint16 and np.array_equal(out, img)


def test_dicom_monochrome1_is_inverted(tmp_path):
    px = random_image(32)
    mono2 = load_image(write_dicom(tmp_path / "m2.dcm", px))
    mono1 = load_image(write_dicom(tmp_path / "m1.dcm", px, photometric="MONOCHROME1"))
    assert np.array_equal(mono2, px)
    assert np.array_equal(mono1, 255 - px)


def test_dicom_12bit_scaled_to_full_uint16(tmp_path):
    px = np.linspace(0, 4095, 32 * 32).reshape(32, 32).astype(np.uint16)
    out = load_image(write_dicom(tmp_path / "d.dcm", px, bits=12))
    assert out.dtype == np.uint16
    assert out.min() == 0 and out.max() == 65535
    assert np.allclose(out, px * (65535 / 4095), atol=1)


def test_dicom_rescale_slope_intercept_keeps_relative_scale(tmp_path):
    px = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    plain = load_image(write_dicom(tmp_path / "p.dcm", px)).astype(int)
    # A negative slope flips intensities: the stored range maps to [-1024+..., -1024].
    flipped = load_image(write_dicom(tmp_path / "f.dcm", px, slope=-1.0, intercept=-1024.0))
    assert np.array_equal(flipped.astype(int), 255 - plain)


def test_dicom_metadata_is_only_safe_tags(tmp_path):
    _, meta = read_image(write_dicom(tmp_path / "d.dcm", random_image(32)))
    assert meta == {"view_position": "PA", "modality": "CR", "bits_stored": 8,
                    "photometric_interpretation": "MONOCHROME2"}


def test_mask_binarized_at_half_max(tmp_path):
    raw = np.array([[0, 100, 128, 255]] * 4, dtype=np.uint8)
    assert load_mask(write_png(tmp_path / "m.png", raw)).tolist()[0] == [0, 0, 1, 1]
    ones = np.array([[0, 1]] * 2, dtype=np.uint8)
    assert load_mask(write_png(tmp_path / "o.png", ones)).tolist() == [[0, 1], [0, 1]]


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00"])
def test_unusable_files_raise_actionable_error(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match="bad.png"):
        load_image(path)
