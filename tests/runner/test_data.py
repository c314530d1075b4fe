"""What counts as the same data: corrected labels reach a run, a stored backbone is keyed by
the pixels it pretrained on (not by file names), an import is redone when its folder changes."""

from __future__ import annotations

import shutil
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd

from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.manifest import load_manifest, save_manifest
from umsrep.data.synthetic import synthesize
from umsrep.experiment import load_experiment
from umsrep.runner.data import RunData, materialize, source_manifest
from umsrep.runner.plan import backbone_key, pool_digest


def _run_data(manifest, out) -> RunData:
    cache = prepare_cache(manifest, size=32, out=out, workers=1)
    index = load_cache(cache).index
    n = len(index)
    return RunData(cache_path=cache, index=index, pretrain=np.arange(n), train=np.arange(n),
                   external=np.arange(0), folds=[])


def test_pool_digest_follows_the_pixels_not_the_paths(tmp_path):
    a = synthesize("cxr", 6, 32, seed=1, out_dir=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = tmp_path / "b" / "manifest.parquet"
    df = load_manifest(b)
    df["image_path"] = df["image_path"].str.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    df["mask_path"] = df["mask_path"].str.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    save_manifest(df, b, df.attrs["label_columns"])
    first = _run_data(a, tmp_path / "cache")
    moved = _run_data(b, tmp_path / "cache")
    assert moved.cache_path != first.cache_path  # other files: another cache
    assert moved.pool_digest(0) == first.pool_digest(0)  # the same pixels: the same pool
    # one film replaced under the same name: another pool, whatever the ids say
    path = df["image_path"].iloc[2]
    cv2.imwrite(path, 255 - cv2.imread(path, cv2.IMREAD_UNCHANGED))
    replaced = _run_data(b, tmp_path / "cache")
    assert list(replaced.index["sample_id"]) == list(first.index["sample_id"])
    assert replaced.pool_digest(0) != first.pool_digest(0)
    # a mask or a label counts only where a supervised pretraining reads it
    mask = df["mask_path"].iloc[0]
    cv2.imwrite(mask, 255 - cv2.imread(mask, cv2.IMREAD_UNCHANGED))
    remasked = _run_data(b, tmp_path / "cache")
    assert remasked.pool_digest(0) == replaced.pool_digest(0)
    assert remasked.pool_digest(0, ["mask"]) != replaced.pool_digest(0, ["mask"])
    assert replaced.pool_digest(0, ["abnormal"]) != replaced.pool_digest(0)


def test_a_supervised_backbone_is_keyed_by_its_labels_a_denoiser_is_not(tiny_config, tmp_path):
    data = _run_data(synthesize("cxr", 6, 32, seed=1, out_dir=tmp_path / "a"), tmp_path / "c")
    denoise = load_experiment(data=tiny_config)
    tiny_config["backbone"] |= {"pretrain": "supervised", "task": "abnormal"}
    supervised = load_experiment(data=tiny_config)
    assert pool_digest(denoise, data, 0) == data.pool_digest(0)
    assert pool_digest(supervised, data, 0) == data.pool_digest(0, ["abnormal"])
    relabelled = replace(data, index=data.index.assign(abnormal=1 - data.index["abnormal"]))
    assert pool_digest(denoise, relabelled, 0) == pool_digest(denoise, data, 0)
    assert backbone_key(supervised, 0, pool_digest(supervised, relabelled, 0)) != \
        backbone_key(supervised, 0, pool_digest(supervised, data, 0))


def test_corrected_labels_of_a_manifest_source_reach_the_run(tiny_config, tmp_path):
    """A manifest whose labels were corrected after a first run: the second run's index (what
    folds stratify on, heads train and runs score against) has the corrected labels."""
    src = synthesize("cxr", 24, 32, seed=2, out_dir=tmp_path / "src")
    tiny_config["folds"]["stratify"] = None  # flipped labels would regroup stratified folds
    tiny_config["data"] |= {"pretrain": [], "train": [{"manifest": str(src)}], "test": [],
                            "cache_dir": str(tmp_path / "work")}
    first = materialize(load_experiment(data=tiny_config))
    df = load_manifest(src)
    df["abnormal"] = 1 - df["abnormal"]
    save_manifest(df, src, df.attrs["label_columns"])
    second = materialize(load_experiment(data=tiny_config))
    ids = first.index["sample_id"]
    expected = 1 - first.index.set_index("sample_id")["abnormal"]
    pd.testing.assert_series_equal(
        second.index.set_index("sample_id")["abnormal"].loc[ids], expected.loc[ids],
        check_dtype=False)
    # the same pixels: the new rows share the arrays, and a denoiser's key stays
    assert np.array_equal(load_cache(second.cache_path).images,
                          load_cache(first.cache_path).images)
    assert second.pool_digest(0) == first.pool_digest(0)


def test_an_import_is_redone_when_what_it_reads_changes(tiny_config, tmp_path):
    """A labels CSV imported once, then given one more row, then a corrected label: each time
    the stored import is redone; unchanged, it is reused."""
    from umsrep.experiment import SourceConfig

    src = synthesize("cxr", 6, 32, seed=4, out_dir=tmp_path / "syn")
    rows = load_manifest(src)[["image_path", "patient_id", "abnormal"]]
    csv = tmp_path / "labels.csv"
    rows.iloc[:5].to_csv(csv, index=False)
    exp = load_experiment(data=tiny_config)
    source = SourceConfig(importer="generic", path=str(csv))
    work = tmp_path / "work"
    first = source_manifest(exp, source, work)
    assert source_manifest(exp, source, work) == first  # unchanged: reused
    rows.to_csv(csv, index=False)
    added = source_manifest(exp, source, work)
    assert added != first and len(load_manifest(added)) == 6
    rows.assign(abnormal=1 - rows["abnormal"]).to_csv(csv, index=False)
    relabelled = load_manifest(source_manifest(exp, source, work))
    assert (relabelled["abnormal"] == 1 - rows["abnormal"].to_numpy()).all()


def test_source_fingerprint_sees_added_and_changed_files_of_a_folder(tmp_path):
    import os

    from umsrep.runner.data import source_fingerprint

    (tmp_path / "a" / "masks").mkdir(parents=True)
    (tmp_path / "a" / "x.png").write_bytes(b"12")
    (tmp_path / "a" / "masks" / "x.png").write_bytes(b"3")
    before = source_fingerprint(tmp_path / "a")
    assert source_fingerprint(tmp_path / "a") == before
    (tmp_path / "a" / "masks" / "y.png").write_bytes(b"4")
    added = source_fingerprint(tmp_path / "a")
    assert added != before
    st = (tmp_path / "a" / "x.png").stat()
    (tmp_path / "a" / "x.png").write_bytes(b"13")  # the same size, another time
    os.utime(tmp_path / "a" / "x.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert source_fingerprint(tmp_path / "a") != added


def test_a_stage_context_looks_backbones_up_by_the_planned_keys(tiny_config, tmp_path):
    """The run's context starts with each fold's backbone key from the plan (what Ray workers
    get too, sweeps.driver Setup.loop_config), the key the pool's pixels give."""
    from umsrep.runner.context import backbone_store_key
    from umsrep.runner.local import prepare_run

    exp = load_experiment(data=tiny_config)
    run = prepare_run(exp, tmp_path / "runs")
    keys = run.plan.backbone_keys()
    assert set(keys) == {0, 1} and run.ctx.store_keys == keys
    for fold, key in keys.items():
        assert key == backbone_key(exp, fold, pool_digest(exp, run.data, fold))
        assert backbone_store_key(run.ctx, fold) == key
