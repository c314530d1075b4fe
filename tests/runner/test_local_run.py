"""A whole experiment in one process (``umsrep train``): run folder, reuse and resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from umsrep.experiment import load_experiment
from umsrep.runner.local import run_local
from umsrep.schema import CURVES_COLUMNS, METRICS_COLUMNS, PREDICTIONS_COLUMNS, STAGES_COLUMNS


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_cache):
    from tests.runner.conftest import TINY

    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["cache_dir"] = str(tiny_cache)
    cfg["folds"]["run"] = 1
    cfg["strategies"][0]["train"] = {"epochs": 1}  # independent heads: their own settings
    cfg["strategies"][2]["train"] = {"task_batches": "shared"}  # joint: one batch for both
    exp = load_experiment(data=cfg)
    out = tmp_path_factory.mktemp("runs")
    return exp, out, run_local(exp, out)


def test_run_folder_is_complete(local_run):
    _, _, run_dir = local_run
    assert (run_dir / "config.yaml").exists()
    stages = pd.read_parquet(run_dir / "stages.parquet")
    assert list(stages.columns) == list(STAGES_COLUMNS)
    assert set(stages["strategy"]) == {"", "independent", "alternating", "joint", "baseline"}
    assert (stages["status"] == "done").all()
    assert (stages["trainable_params"] > 0).all()
    # every trained stage's step seconds per task it trained (a stored backbone: its denoising)
    seconds = {(r.strategy, r.task): json.loads(r.task_seconds) for r in stages.itertuples()}
    assert set(seconds["alternating", ""]) == {"lung", "abnormal"}
    assert all(v > 0 for v in seconds["alternating", ""].values())
    assert set(seconds["independent", "lung"]) == {"lung"}
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(metrics.columns) == list(METRICS_COLUMNS)
    test = metrics[metrics.split == "test"]
    for strategy in ("independent", "alternating", "joint", "baseline"):
        got = set(test[test.strategy == strategy].metric)
        assert {"dice", "iou", "accuracy", "mcc"} <= got, strategy
    # denoising quality per noise level, for the shared backbone and the baseline denoiser
    den = metrics[(metrics.task == "denoise") & (metrics.metric == "psnr")]
    assert {"shared", "baseline"} <= set(den.strategy)
    assert den["noise"].str.startswith(("gaussian-", "poisson-")).all()
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    assert list(preds.columns) == list(PREDICTIONS_COLUMNS)
    # every strategy predicted the same external test samples (what McNemar pairs)
    cls = preds[(preds.task == "abnormal") & (preds.split == "test")]
    ids = {s: set(g.sample_id) for s, g in cls.groupby("strategy")}
    assert len(ids) == 4 and len({frozenset(v) for v in ids.values()}) == 1
    for path in stages["checkpoint"]:
        assert (path and (pd.io.common.file_exists(path + "/model.pt")))
    # validation curves: every trained stage, time rising with the epochs
    curves = pd.read_parquet(run_dir / "curves.parquet")
    assert list(curves.columns) == list(CURVES_COLUMNS)
    joint = curves[(curves.strategy == "joint") & (curves.metric == "lung/dice")]
    assert len(joint) and joint["elapsed_s"].is_monotonic_increasing
    assert (joint["elapsed_s"] > 0).all() and joint["value"].between(0, 1).all()
    base = curves[(curves.kind == "baseline") & (curves.task == "abnormal")]
    assert {"abnormal/accuracy"} <= set(base.metric)


def test_a_strategy_trains_with_its_own_settings(local_run):
    _, _, run_dir = local_run
    stages = pd.read_parquet(run_dir / "stages.parquet")
    epochs = stages.groupby("strategy")["epochs"].max()
    assert epochs["independent"] == 1  # strategies[0].train.epochs
    assert epochs["joint"] == epochs["alternating"] == epochs["baseline"] == 2  # train.epochs
    # joint draws one shared batch per step for lung and abnormal (train.task_batches: shared):
    # an epoch sees each training image once, not once per task
    results = {p.parent.name: json.loads(p.read_text())
               for p in run_dir.glob("stages/f0-*/result.json")}
    per_epoch = {k: r["train_images"] / r["epochs"] for k, r in results.items()}
    assert per_epoch["f0-joint"] == per_epoch["f0-independent-lung"] > 0  # per task: twice


def test_independent_heads_in_one_stage_share_the_frozen_pass_and_keep_their_epochs(
        tmp_path, tiny_cache):
    from tests.runner.conftest import TINY

    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["cache_dir"] = str(tiny_cache)
    cfg["folds"]["run"] = 1
    cfg["tasks"][1]["head_kwargs"] = {"guide": "lung"}
    cfg["strategies"] = [{"name": "independent", "options": {"one_stage": True},
                          "train": {"task_batches": "shared", "epochs": 3}}]
    cfg["baseline"] = {"enabled": False}
    run_dir = run_local(load_experiment(data=cfg), tmp_path)
    stages = pd.read_parquet(run_dir / "stages.parquet")
    heads = stages[stages["kind"] == "head"]
    assert list(heads["strategy"]) == ["independent"] and list(heads["task"]) == [""]
    backbone = stages.loc[stages["kind"] == "backbone", "trainable_params"].iloc[0]
    assert 0 < heads["trainable_params"].iloc[0] < backbone  # the backbone stayed frozen
    result = json.loads((run_dir / "stages" / "f0-independent" / "result.json").read_text())
    assert set(result["best_epochs"]) == {"lung", "abnormal"}
    assert result["best_epoch"] == max(result["best_epochs"].values())
    meta = json.loads((run_dir / "stages" / "f0-independent" / "checkpoint" / "model.json")
                      .read_text())
    assert meta["head_epochs"] == result["best_epochs"]
    abnormal = next(t for t in meta["tasks"] if t["name"] == "abnormal")
    assert abnormal["head_kwargs"]["guide"] == "lung"  # guided: the lung head is in the stage
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert {"lung", "abnormal"} <= set(metrics.loc[metrics["strategy"] == "independent", "task"])


def test_run_folder_records_its_environment(local_run):
    import torch

    _, _, run_dir = local_run
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["ray"] and env["python"]
    assert env["packages"]


def test_independent_head_trains_only_the_head(local_run):
    _, _, run_dir = local_run
    stages = pd.read_parquet(run_dir / "stages.parquet").set_index(["strategy", "task"])
    joint = stages.loc[("joint", ""), "trainable_params"]
    ind = stages.loc[("independent", "abnormal"), "trainable_params"]
    backbone = stages.loc[("", "denoise"), "trainable_params"]
    assert ind < joint and ind < backbone
    # joint fine-tunes the shared encoder: its count, recorded apart, is what joint trains
    # beyond the heads (the same heads the independent stages train); frozen: none
    shared = stages.loc[("joint", ""), "backbone_params"]
    heads = stages.loc[[("independent", "lung"), ("independent", "abnormal")], "trainable_params"]
    assert 0 < shared < backbone and joint - shared == heads.sum()
    assert (stages.loc[["independent", "baseline"], "backbone_params"] == 0).all()


def test_resume_reruns_nothing_finished_and_backbone_is_reused(local_run):
    exp, out, run_dir = local_run
    results = sorted(run_dir.glob("stages/*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    assert run_local(exp, out, resume=run_dir) == run_dir
    assert {p: p.stat().st_mtime_ns for p in results} == before
    # a new run of the same experiment reuses the stored backbone: no retraining
    second = run_local(exp, out)
    bb = json.loads((second / "stages" / "f0-backbone" / "result.json").read_text())
    assert bb["reused"] is True


def test_resume_with_other_settings_is_refused_naming_the_key(local_run):
    from dataclasses import replace

    from umsrep.config import ConfigError

    exp, out, run_dir = local_run
    other = replace(exp, data=replace(exp.data, fit="pad"))
    with pytest.raises(ConfigError) as err:
        run_local(other, out, resume=run_dir)
    assert err.value.key == "data" and "resumed" in str(err.value)
    # resources, search budget and paths may change on resume
    relaxed = replace(exp, resources=replace(exp.resources, max_failures=5),
                      data=replace(exp.data, cache_dir=exp.data.cache_dir + "/"))
    assert run_local(relaxed, out, resume=run_dir) == run_dir


def test_resume_takes_the_newer_of_ray_checkpoint_and_stage_state(tmp_path):
    import os

    from umsrep.runner.kinds import newer_state

    ray_copy, state = tmp_path / "ray", tmp_path / "state"
    ray_copy.mkdir()
    state.mkdir()
    assert newer_state(None, state) == state
    (ray_copy / "last.pt").write_bytes(b"epoch 5")
    assert newer_state(ray_copy, state) == ray_copy  # the stage has no state of its own
    (state / "last.pt").write_bytes(b"epoch 8")
    os.utime(ray_copy / "last.pt", (1_000_000, 1_000_000))
    assert newer_state(ray_copy, state) == state  # written later than the Ray copy
    os.utime(state / "last.pt", (500_000, 500_000))
    assert newer_state(ray_copy, state) == ray_copy


def _checkpoints(run_dir) -> dict[str, str]:
    """``kind/strategy/task`` -> the stage's checkpoint folder (fold 0)."""
    stages = pd.read_parquet(run_dir / "stages.parquet")
    stages = stages[stages["fold"] == 0]
    labels = stages["kind"] + "/" + stages["strategy"] + "/" + stages["task"]
    return dict(zip(labels, stages["checkpoint"], strict=True))


def test_every_model_json_is_a_model_spec_that_builds_its_weights(local_run):
    """model.json keeps its format (the spec's keys, as written before ModelSpec) and
    build_model rebuilds every stage's network, the denoiser-fed baseline included."""
    from pathlib import Path

    import torch

    from umsrep.data.contrast import contrast_key
    from umsrep.models import DenoisedInput, ModelSpec, build_model

    _, _, run_dir = local_run
    for stage, ckpt in _checkpoints(run_dir).items():
        meta = json.loads((Path(ckpt) / "model.json").read_text())
        spec = ModelSpec.from_json(meta)
        assert spec.to_json() == {k: meta[k] for k in spec.to_json()}, stage
        model = build_model(spec)
        model.load_state_dict(torch.load(Path(ckpt) / "model.pt", weights_only=True))
        assert isinstance(model, DenoisedInput) == meta["denoised_input"], stage
        assert meta["contrast_key"] == contrast_key(meta["contrast"]), stage
    assert any(json.loads((Path(c) / "model.json").read_text())["denoised_input"]
               for c in _checkpoints(run_dir).values())


def test_store_keeps_the_backbone_once_and_old_store_folders_load(local_run, tmp_path):
    import shutil
    from pathlib import Path

    import torch

    from umsrep.runner.context import StageContext
    from umsrep.runner.network import stored_backbone

    exp, _, run_dir = local_run
    (checkpoint,) = [Path(c) for k, c in _checkpoints(run_dir).items()
                     if k.startswith("backbone/")]
    store = checkpoint.parent
    assert not (store / "model.pt").exists()  # one copy: the model folder checkpoint/
    written = torch.load(checkpoint / "model.pt", weights_only=True)
    # a store folder as the first versions wrote it: model.pt = backbone + head + task
    old = tmp_path / "store" / store.name
    shutil.copytree(store, old)
    shutil.rmtree(old / "checkpoint")
    def part(prefix):
        return {k[len(prefix):]: v for k, v in written.items() if k.startswith(prefix)}

    torch.save({"backbone": part("backbone."), "head": part("heads.denoise."), "task": "denoise"},
               old / "model.pt")
    for folder in (store.parent, old.parent):
        ctx = StageContext(exp=exp, data=None, run_dir=run_dir, store_dir=folder,
                           store_keys={0: store.name})
        state, task = stored_backbone(ctx, 0)
        assert task == "denoise"
        assert set(state) == set(written)
        assert all(torch.equal(state[k], written[k]) for k in written)


def test_the_same_command_twice_gives_the_same_figures(tmp_path):
    """Seeded end to end: two runs, each from its own empty cache (so the backbone is trained
    twice, not reused), write the same metrics and predictions, value for value. Same machine
    and thread count: a different number of threads sums in another order (the module's
    fixture run has the process's threads, a test 1), which moves the last digits."""
    from tests.runner.conftest import TINY

    runs = []
    for name in ("a", "b"):
        cfg = json.loads(json.dumps(TINY))
        cfg["data"]["cache_dir"] = str(tmp_path / name / "cache")
        cfg["folds"]["run"] = 1
        runs.append(run_local(load_experiment(data=cfg), tmp_path / name / "runs"))
    for name in ("metrics.parquet", "predictions.parquet"):
        first, other = (pd.read_parquet(r / name) for r in runs)
        assert len(first)
        pd.testing.assert_frame_equal(first, other, check_exact=True)
