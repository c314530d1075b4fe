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


def _lungs_and_band() -> np.ndarray:
    m = _lungs()
    m[36:40, 0:40] = True  # "lung" in a black band at the bottom, 160 px, apart from both lungs
    return m


def test_keep_largest_two_drops_the_third_region():
    out = clean_mask(_lungs_and_band(), keep_largest=2)
    np.testing.assert_array_equal(out, _lungs())


def test_keep_largest_zero_or_enough_changes_nothing():
    m = _lungs_and_band()
    np.testing.assert_array_equal(clean_mask(m, keep_largest=0), m)
    np.testing.assert_array_equal(clean_mask(m, keep_largest=3), m)


def test_keep_largest_keeps_filling_holes_and_drops_islands():
    m = _lungs_and_band()
    m[10:14, 8:11] = False  # a hole in the right lung
    m[0:2, 38:40] = True  # a 4 px island
    out = clean_mask(m, min_fraction=0.05, fill_holes=True, keep_largest=2)
    np.testing.assert_array_equal(out, _lungs())


def test_keep_largest_one_keeps_the_biggest_lung():
    out = clean_mask(_lungs(), keep_largest=1)
    want = np.zeros((40, 40), bool)
    want[5:33, 22:36] = True  # left lung, 392 px > 360 px
    np.testing.assert_array_equal(out, want)
