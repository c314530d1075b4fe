"""Synthetic CXR and Doppler data: determinism, masks, class balance, learnable-not-trivial
signal, and the manifest produced through the generic importer."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from umsrep.data.synthetic import SYNTHESIZERS, generate, synthesize
from umsrep.data.synthetic import cli as synth_cli

KINDS = ["cxr", "doppler"]


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of ``scores`` for the boolean ``positive`` labels."""
    ranks = pd.Series(scores).rank().to_numpy()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def cxr_large():
    return generate("cxr", 600, 32, seed=11)


@pytest.fixture(scope="module")
def doppler_large():
    return generate("doppler", 600, 32, seed=11)


def test_registry_lists_both_generators():
    assert SYNTHESIZERS.names() == ["cxr", "doppler"]
    with pytest.raises(KeyError, match="known: cxr, doppler"):
        generate("mri", 4)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_arrays_other_seed_differs(kind):
    a, b, c = (
        generate(kind, 20, 32, seed=5),
        generate(kind, 20, 32, seed=5),
        generate(kind, 20, 32, 6),
    )
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.uint8 and a.images.shape == (20, 32, 32)


@pytest.mark.parametrize("kind", KINDS)
def test_masks_binary_and_non_empty(kind):
    batch = generate(kind, 40, 48, seed=2)
    assert set(np.unique(batch.masks)) == {0, 1}
    coverage = batch.masks.reshape(40, -1).mean(axis=1)
    assert coverage.min() > 0.005 and coverage.max() < 0.9
    assert batch.images.reshape(40, -1).std(axis=1).min() > 5  # never a blank image


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_sizes_refused(kind):
    with pytest.raises(ValueError, match="n >= 1"):
        generate(kind, 0, 32)
    with pytest.raises(ValueError, match="size >= 16"):
        generate(kind, 3, 8)


def test_cxr_class_balance_and_patients(cxr_large):
    labels = cxr_large.labels
    share = labels.diagnosis.value_counts(normalize=True)
    assert 0.42 < share["normal"] < 0.58
    assert 1.4 < share["bacterial"] / share["viral"] < 2.8
    assert (labels.abnormal == (labels.diagnosis != "normal").astype(int)).all()
    per_patient = labels.groupby("patient_id").size()
    assert per_patient.max() == 2 and 1.3 < per_patient.mean() < 1.7
    assert (labels.groupby("patient_id").diagnosis.nunique() == 1).all()


def test_cxr_abnormal_brighter_in_lungs_but_overlapping(cxr_large):
    masks = cxr_large.masks.astype(bool)
    lung_mean = np.array([img[m].mean() for img, m in zip(cxr_large.images, masks, strict=True)])
    abnormal = cxr_large.labels.abnormal.to_numpy(dtype=bool)
    assert lung_mean[abnormal].mean() > lung_mean[~abnormal].mean()
    # mean intensity alone must not solve the task: exposure varies between images
    assert lung_mean[~abnormal].max() > lung_mean[abnormal].min()
    assert 0.52 < _auc(lung_mean, abnormal) < 0.9
    # the lesion signal is relative to the rest of the body: lungs vs body contrast separates better
    body_mean = np.array([img[~m].mean() for img, m in zip(cxr_large.images, masks, strict=True)])
    assert _auc(lung_mean / body_mean, abnormal) > _auc(lung_mean, abnormal)


def test_doppler_flow_mix_and_partial_quality_labels(doppler_large):
    labels = doppler_large.labels
    share = labels.flow.value_counts(normalize=True)
    for flow, expected in (("MV", 855 / 2444), ("MA", 490 / 2444), ("TR", 1099 / 2444)):
        assert abs(share[flow] - expected) < 0.07
    labelled = labels.quality.notna()
    assert 0.25 < labelled.mean() < 0.42
    assert set(labels.quality[labelled]) == {"good", "low"}


def test_doppler_envelope_side_and_low_quality_background(doppler_large):
    masks, labels = doppler_large.masks, doppler_large.labels
    # the envelope region is widest at the baseline: MV grows up from it, TR hangs down from it
    width = masks.sum(axis=2)  # [N, H]
    first = (width > 0).argmax(axis=1)
    last = width.shape[1] - 1 - (width[:, ::-1] > 0).argmax(axis=1)
    widest = (width.argmax(axis=1) - first) / np.maximum(last - first, 1)
    flow = labels.flow.to_numpy()
    assert np.median(widest[flow == "MV"]) > 0.8 and np.median(widest[flow == "TR"]) < 0.2
    outside = np.array(
        [img[m == 0].mean() for img, m in zip(doppler_large.images, masks, strict=True)]
    )
    low = (labels.quality == "low").fillna(False).to_numpy(dtype=bool)
    good = (labels.quality == "good").fillna(False).to_numpy(dtype=bool)
    assert outside[low].mean() > outside[good].mean()


@pytest.mark.parametrize("kind", KINDS)
def test_synthesize_same_bytes_for_same_seed(kind, tmp_path):
    a = synthesize(kind, 12, 32, seed=3, out_dir=tmp_path / "a")
    b = synthesize(kind, 12, 32, seed=3, out_dir=tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert files_a == files_b and len(files_a) == 24
    for rel in [*files_a, Path("labels.csv")]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    paths = ["image_path", "mask_path"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(a).drop(columns=paths), pd.read_parquet(b).drop(columns=paths)
    )


def test_cxr_manifest_through_generic_import(tmp_path):
    manifest_path = synthesize("cxr", 30, 32, seed=1, out_dir=tmp_path)
    assert manifest_path == tmp_path / "manifest.parquet"
    manifest = pd.read_parquet(manifest_path)
    expected = generate("cxr", 30, 32, seed=1).labels
    for column in ("sample_id", "patient_id", "dataset", "split", "image_path", "mask_path"):
        assert column in manifest.columns
    assert (manifest.dataset == "synthetic-cxr").all() and manifest.split.isna().all()
    assert pd.api.types.is_integer_dtype(manifest.abnormal)
    merged = manifest.merge(expected, on="sample_id", suffixes=("", "_expected"))
    assert len(merged) == 30
    assert (merged.abnormal == merged.abnormal_expected).all()
    assert (merged.diagnosis == merged.diagnosis_expected).all()
    assert (merged.patient_id == merged.patient_id_expected).all()
    assert all(Path(p).is_file() for p in [*manifest.image_path, *manifest.mask_path])
    assert (tmp_path / "manifest.quarantine.csv").read_text().strip() == "path,reason"


def test_doppler_manifest_keeps_missing_quality(tmp_path):
    manifest = pd.read_parquet(synthesize("doppler", 30, 32, seed=4, out_dir=tmp_path))
    expected = generate("doppler", 30, 32, seed=4).labels.set_index("sample_id")
    manifest = manifest.set_index("sample_id").loc[expected.index]
    assert (manifest.flow == expected.flow).all()
    assert (manifest.quality.isna() == expected.quality.isna()).all()
    assert 0 < manifest.quality.notna().sum() < 30
    assert (manifest.dataset == "synthetic-doppler").all()


def test_cli_writes_manifest_and_prints_it(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synth_cli.add_arguments(parser)
    args = parser.parse_args(["doppler", "-n", "6", "--size", "32", "-o", str(tmp_path)])
    assert synth_cli.run(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "manifest.parquet")
    assert len(pd.read_parquet(tmp_path / "manifest.parquet")) == 6
