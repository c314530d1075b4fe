"""Mask clean-up: islands below a fraction of the largest region go, enclosed holes fill."""

from __future__ import annotations

import numpy as np

from umsrep.derive.postprocess import clean_mask


def _lungs() -> np.ndarray:
    m = np.zeros((40, 40), bool)
    m[5:35, 4:16] = True  # right lung, 360 px
    m[5:33, 22:36] = True  # left lung, 392 px
    return m


def test_defaults_change_nothing():
    m = _lungs()
    m[0, 0] = True
    np.testing.assert_array_equal(clean_mask(m), m)


def test_small_islands_go_and_both_lungs_stay():
    m = _lungs()
    noisy = m.copy()
    noisy[0:3, 37:40] = True  # a 9 px island (a burned-in label)
    out = clean_mask(noisy, min_fraction=0.1)
    np.testing.assert_array_equal(out, m)


def test_enclosed_holes_fill_but_border_background_does_not():
    m = _lungs()
    holed = m.copy()
    holed[10:14, 8:11] = False  # inside the right lung
    holed[28:33, 30:34] = False  # a notch open below the left lung stays open
    out = clean_mask(holed, fill_holes=True)
    assert out[10:14, 8:11].all()
    assert not out[28:33, 30:34].any()
    assert not out[0].any() and not out[:, 0].any()


def test_empty_mask_stays_empty():
    empty = np.zeros((8, 8), bool)
    assert not clean_mask(empty, min_fraction=0.5, fill_holes=True).any()
