"""data.contrast: the normalization itself, and that the cache, original-size scoring and
predict all apply the same one."""

import cv2
import numpy as np
import pytest

from tests.data.conftest import random_image, write_png
from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.contrast import apply_contrast


def _radiograph(washed: bool, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A textured 'chest' with two darker lungs, and the lung mask; ``washed`` squeezes the grey
    levels into 150-230 (a JSRT-like film) instead of 10-250."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    lung = (np.hypot(yy - .5, xx - .3) < .19) | (np.hypot(yy - .5, xx - .7) < .19)
    img = 0.7 - 0.3 * lung + 0.08 * np.sin(xx * 40) * lung + 0.06 * rng.standard_normal(lung.shape)
    lo, hi = (150, 230) if washed else (10, 250)
    return np.clip(lo + (hi - lo) * (img - img.min()) / np.ptp(img), 0, 255).astype(np.uint8), lung


def test_none_is_identity_and_bad_method_refused():
    x = random_image(32, seed=1)
    assert apply_contrast(x, "none") is x
    with pytest.raises(ValueError, match="unknown"):
        apply_contrast(x, "hist")
    with pytest.raises(TypeError):
        apply_contrast(x.astype(np.float32), "clahe")


@pytest.mark.parametrize("method", ["clahe", "equalize"])
def test_washed_out_film_moves_towards_the_normal_film(method):
    """The point of the option: two exposures of one chest differ less after it, in the lungs'
    grey level and in the lung-to-mediastinum contrast (on 40 real images per dataset CLAHE
    brought Shenzhen, Montgomery and JSRT closer in both: see sweeps/cxr_public.yaml)."""
    (normal, lung), (washed, _) = _radiograph(False), _radiograph(True)

    def level_and_gap(img):
        img = img.astype(float)
        return img[lung].mean(), img[~lung].mean() - img[lung].mean()

    (l0, g0), (l1, g1) = level_and_gap(normal), level_and_gap(washed)
    a, b = apply_contrast(normal, method), apply_contrast(washed, method)
    assert a.dtype == np.uint8 and a.shape == normal.shape
    (m0, h0), (m1, h1) = level_and_gap(a), level_and_gap(b)
    assert abs(m0 - m1) < 0.75 * abs(l0 - l1)
    assert abs(h0 - h1) < 0.75 * abs(g0 - g1)


def test_clahe_keeps_black_bands_dark_and_handles_16_bit():
    img = _radiograph(False)[0]
    img[-20:] = 0  # a letterbox band
    out = apply_contrast(img, "clahe")
    assert out[-15:].max() < 16  # near black, never "tissue"
    wide = img.astype(np.uint16) * 257
    out16 = apply_contrast(wide, "clahe")
    assert out16.dtype == np.uint16
    eq16 = apply_contrast(wide, "equalize")
    assert eq16.dtype == np.uint16 and eq16.max() == 65535


def test_cache_applies_contrast_before_resize_and_keys_on_it(tmp_path):
    import pandas as pd

    from umsrep.data.importers import run_import

    src = tmp_path / "src"
    write_png(src / "a.png", _radiograph(True)[0])
    pd.DataFrame([{"image_path": "a.png", "patient_id": "p"}]).to_csv(src / "t.csv", index=False)
    manifest = run_import("generic", src / "t.csv", tmp_path / "t.parquet").manifest_path
    plain = prepare_cache(manifest, size=48, out=tmp_path / "cache", workers=1)
    clahe = prepare_cache(manifest, size=48, out=tmp_path / "cache", workers=1, contrast="clahe")
    assert plain != clahe
    assert load_cache(clahe).meta["contrast"] == "clahe"
    expect = cv2.resize(apply_contrast(_radiograph(True)[0], "clahe"), (48, 48),
                        interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(load_cache(clahe).images[0], expect)
    assert not np.array_equal(load_cache(plain).images[0], expect)


def test_original_size_scoring_sees_the_same_contrast(tmp_path, monkeypatch):
    """TTA at the original size reads the original file: it must normalize it as the cache."""
    import pandas as pd

    import umsrep.runner.original_size as original_size
    from umsrep.runner.original_size import tta_probabilities

    write_png(tmp_path / "a.png", _radiograph(True)[0])
    index = pd.DataFrame({"sample_id": ["a"], "image_path": [str(tmp_path / "a.png")]})
    seen = []
    monkeypatch.setattr(original_size, "segment_original",
                        lambda model, task, pixels, *a, **k: seen.append(pixels) or
                        np.zeros(pixels.shape, np.float32))
    task = type("T", (), {"name": "lung"})()
    tta_probabilities(None, task, ["a"], index, 32, ["pad"], contrast="clahe")
    tta_probabilities(None, task, ["a"], index, 32, ["pad"])
    np.testing.assert_array_equal(seen[0], apply_contrast(_radiograph(True)[0], "clahe"))
    np.testing.assert_array_equal(seen[1], _radiograph(True)[0])


def test_clahe_rescues_a_film_washed_into_a_few_grey_levels():
    """Four visible JSRT films lie wholly within 239-254; CLAHE alone left them white (the
    shared models found no lung there). The percentile stretch before it restores contrast."""
    normal, lung = _radiograph(False)
    washed = (239 + np.round(normal / 255.0 * 15)).astype(np.uint8)  # 239-254 only
    out = apply_contrast(washed, "clahe").astype(float)
    gap = out[~lung].mean() - out[lung].mean()
    assert np.percentile(out, 99) - np.percentile(out, 1) > 150
    assert gap > 0.5 * (apply_contrast(normal, "clahe")[~lung].mean()
                        - apply_contrast(normal, "clahe")[lung].mean())


def test_stretch_leaves_a_full_range_film_nearly_alone():
    from umsrep.data.contrast import stretch

    img = random_image(64, seed=3)
    img[0, 0], img[0, 1] = 0, 255
    full = np.clip(img.astype(int), 0, 255).astype(np.uint8)
    lo, hi = np.percentile(full, [0.5, 99.5])
    out = stretch(full)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - full).max() <= 255 * (1 - (hi - lo) / 255) + 1
    assert stretch(np.full((8, 8), 7, np.uint8)).max() == 7  # flat: untouched


def test_a_changed_method_changes_the_keys():
    from umsrep.data.contrast import VERSION, contrast_key

    assert contrast_key("none") == "none"
    assert contrast_key("clahe") == f"clahe-v{VERSION}" and VERSION >= 2
