"""Fold ensembles, thresholds chosen on held-out folds, and train.checkpoint: best | last.

The run is the tiny experiment with both of its folds (the local runner writes it); expected
values come from its fold models' own predictions, from stub models whose probabilities are
set by hand, or from each epoch's weights as the loop reported them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from umsrep.experiment import load_experiment
from umsrep.models.ensemble import MeanEnsemble
from umsrep.runner.local import prepare_run, run_local
from umsrep.runner.threshold import GRID

TEMPLATES = {"independent-lung", "independent-abnormal", "alternating", "joint", "baseline-lung",
             "baseline-abnormal"}


@pytest.fixture(scope="module")
def two_fold_run(tmp_path_factory, tiny_cache):
    from tests.runner.conftest import TINY

    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["cache_dir"] = str(tiny_cache)
    exp = load_experiment(data=cfg)
    out = tmp_path_factory.mktemp("runs")
    return exp, out, run_local(exp, out)


class Constant(nn.Module):
    """A stub fold model: lung probability ``p_lung`` everywhere, class probabilities
    ``p_abnormal`` for every image."""

    def __init__(self, p_lung: float, p_abnormal: list[float]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so .to(device) has one
        self.p_lung, self.p_abnormal = p_lung, torch.tensor(p_abnormal)

    def forward(self, x, tasks=None):
        b, _, h, w = x.shape
        out = {"lung": torch.full((b, 1, h, w), float(np.log(self.p_lung / (1 - self.p_lung)))),
               "abnormal": torch.log(self.p_abnormal).expand(b, -1)}
        return {t: out[t] for t in (tasks or out)}


def test_mean_ensemble_averages_probabilities_not_logits():
    a, b = Constant(0.2, [0.8, 0.2]), Constant(0.9, [0.3, 0.7])
    out = MeanEnsemble([a, b], {"lung": "segmentation", "abnormal": "classification"})(
        torch.zeros(3, 1, 4, 4))
    torch.testing.assert_close(torch.sigmoid(out["lung"]), torch.full((3, 1, 4, 4), 0.55))
    # mean probability of class 1: (0.2 + 0.7) / 2 = 0.45 (the mean logit would give 0.4335)
    torch.testing.assert_close(torch.softmax(out["abnormal"], 1),
                               torch.tensor([[0.55, 0.45]]).expand(3, -1))


def test_every_template_gets_one_fold_ensemble_on_the_test_splits(two_fold_run):
    _, _, run_dir = two_fold_run
    assert {p.name for p in (run_dir / "ensembles").iterdir()} == TEMPLATES
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    ens = metrics[metrics.fold == -1]
    assert set(ens.strategy) == {"independent", "alternating", "joint", "baseline"}
    assert set(ens.split) == {"test"}
    seg = ens[ens.task == "lung"]
    assert set(seg.metric) == {"dice_orig", "dice_orig_min", "iou_orig"}
    assert {"accuracy", "f1", "mcc"} <= set(ens[ens.task == "abnormal"].metric)
    result = json.loads((run_dir / "ensembles" / "joint" / "result.json").read_text())
    assert result["members"] == ["f0-joint", "f1-joint"] and result["fold"] == -1
    assert result["threshold"]["lung"] in GRID and "abnormal" not in result["threshold"]


@pytest.mark.parametrize("template", ["joint", "baseline-abnormal"])
def test_classification_ensemble_is_the_mean_of_its_fold_models(two_fold_run, template):
    _, _, run_dir = two_fold_run
    strategy = template.split("-")[0]
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    p = preds[(preds.task == "abnormal") & (preds.split == "test") & (preds.strategy == strategy)]
    folds = p[p.fold >= 0].pivot(index="sample_id", columns="fold", values="score")
    ens = p[p.fold == -1].set_index("sample_id")
    assert list(folds.columns) == [0, 1] and len(ens) == len(folds)
    # binary task: score = probability of class 1, from each fold model and from the ensemble
    want = folds.mean(axis=1).loc[ens.index]
    np.testing.assert_allclose(ens["score"], want, atol=1e-5)
    assert (ens["y_pred"] == (want > 0.5).astype(int)).all()


def test_segmentation_ensemble_cuts_the_mean_map_at_the_held_out_threshold(
        two_fold_run, tmp_path, monkeypatch):
    """Fold 0's model says 0.37 everywhere, fold 1's 0.62. On the held-out folds (every image
    has lungs) a full mask beats an empty one, and only t in {0.3, 0.35} keeps both models'
    masks full: ties go to the one closest to 0.5, 0.35. The mean map, 0.495, is then cut at
    0.35 (full mask; at 0.5 it would be empty)."""
    import umsrep.runner.ensemble as ens_mod
    from umsrep.data.io import load_mask
    from umsrep.runner.ensemble import ensemble_groups, score_ensemble

    exp, out, run_dir = two_fold_run
    run = prepare_run(exp, out, resume=run_dir)
    stubs = {"f0-joint": Constant(0.37, [0.8, 0.2]), "f1-joint": Constant(0.62, [0.3, 0.7])}
    monkeypatch.setattr(ens_mod, "load_model_dir",
                        lambda path, device="cpu": (stubs[path.parent.name], {"tasks": []}))
    score_ensemble(run.ctx, "joint", ensemble_groups(run.plan)["joint"], tmp_path / "joint")
    result = json.loads((tmp_path / "joint" / "result.json").read_text())
    assert result["threshold"] == {"lung": 0.35}
    preds = pd.read_parquet(tmp_path / "joint" / "predictions.parquet")
    lung = preds[preds.task == "lung"].set_index("sample_id")
    index = run.ctx.data.index.set_index("sample_id")
    want = {}
    for sid in lung.index:  # a full mask: Dice = 2|M| / (|M| + H W) at the original size
        mask = load_mask(index.loc[sid, "mask_path"]).astype(bool)
        want[sid] = 2 * mask.sum() / (mask.sum() + mask.size)
    np.testing.assert_allclose(lung["score"], pd.Series(want).loc[lung.index], rtol=1e-6)
    cls = preds[preds.task == "abnormal"]
    np.testing.assert_allclose(cls["score"], 0.45, atol=1e-6)  # (0.2 + 0.7) / 2
    metrics = pd.read_parquet(tmp_path / "joint" / "metrics.parquet")
    dice = metrics[(metrics.metric == "dice_orig") & (metrics.split == "test")]["value"].item()
    assert dice == pytest.approx(np.mean(list(want.values())))


def test_a_fixed_threshold_replaces_the_held_out_choice(two_fold_run, tmp_path, monkeypatch):
    """The same stubs with ``evaluation.threshold: 0.5``: the mean map, 0.495, is cut at 0.5,
    so every mask is empty (Dice 0); what the held-out choice would have been (0.35, its Dice
    per grid value) is still recorded."""
    import umsrep.runner.ensemble as ens_mod
    from umsrep.runner.ensemble import ensemble_groups, score_ensemble

    exp, out, run_dir = two_fold_run
    run = prepare_run(exp, out, resume=run_dir)
    run.ctx.exp = replace(exp, evaluation=replace(exp.evaluation, threshold=0.5))
    stubs = {"f0-joint": Constant(0.37, [0.8, 0.2]), "f1-joint": Constant(0.62, [0.3, 0.7])}
    monkeypatch.setattr(ens_mod, "load_model_dir",
                        lambda path, device="cpu": (stubs[path.parent.name], {"tasks": []}))
    score_ensemble(run.ctx, "joint", ensemble_groups(run.plan)["joint"], tmp_path / "joint")
    result = json.loads((tmp_path / "joint" / "result.json").read_text())
    assert result["threshold"] == {"lung": 0.5} and result["threshold_rule"] == "fixed"
    dice = result["threshold_val_dice"]["lung"]
    assert dice[GRID.index(0.35)] == max(dice) > dice[GRID.index(0.5)]
    metrics = pd.read_parquet(tmp_path / "joint" / "metrics.parquet")
    assert metrics[(metrics.metric == "dice_orig") & (metrics.split == "test")]["value"].item() == 0


def test_evaluation_threshold_is_held_out_or_a_probability():
    from tests.runner.conftest import TINY
    from umsrep.config import ConfigError

    cfg = json.loads(json.dumps(TINY))
    for bad in (1.5, 0, "best"):
        cfg["evaluation"] = {"threshold": bad}
        with pytest.raises(ConfigError, match="evaluation.threshold"):
            load_experiment(data=cfg)
    cfg["evaluation"] = {"threshold": 0.4}
    assert load_experiment(data=cfg).evaluation.threshold == 0.4


def test_ensembles_are_written_once_and_not_duplicated_on_resume(two_fold_run):
    exp, out, run_dir = two_fold_run
    results = sorted(run_dir.glob("ensembles/*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    assert run_local(exp, out, resume=run_dir) == run_dir
    assert {p: p.stat().st_mtime_ns for p in results} == before
    after = pd.read_parquet(run_dir / "metrics.parquet")
    assert len(after) == len(rows) and (after.fold == -1).sum() == (rows.fold == -1).sum()
    ens = after[after.fold == -1]
    assert not ens.duplicated(["strategy", "task", "split", "metric"]).any()


def test_stage_records_its_held_out_threshold_for_predict(two_fold_run):
    _, _, run_dir = two_fold_run
    stage = run_dir / "stages" / "f0-joint"
    result = json.loads((stage / "result.json").read_text())
    meta = json.loads((stage / "checkpoint" / "model.json").read_text())
    assert meta["threshold"] == result["threshold"] and set(meta["threshold"]) == {"lung"}
    dice = result["threshold_val_dice"]["lung"]
    assert len(dice) == len(GRID) and result["threshold_val_images"]["lung"] > 0
    assert dice[GRID.index(meta["threshold"]["lung"])] == max(dice)


def test_ensemble_folder_loads_as_the_mean_of_its_members(two_fold_run):
    from umsrep.predict import load_model_dir

    _, _, run_dir = two_fold_run
    ensemble, meta = load_model_dir(run_dir / "ensembles" / "joint")
    members = [load_model_dir(run_dir / "stages" / s / "checkpoint")[0]
               for s in ("f0-joint", "f1-joint")]
    assert isinstance(ensemble, MeanEnsemble) and meta["threshold"]["lung"] in GRID
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        got, outs = ensemble(x), [m(x) for m in members]
    want = torch.stack([torch.softmax(o["abnormal"], 1) for o in outs]).mean(0)
    torch.testing.assert_close(torch.softmax(got["abnormal"], 1), want)
    want = torch.stack([torch.sigmoid(o["lung"]) for o in outs]).mean(0)
    torch.testing.assert_close(torch.sigmoid(got["lung"]), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("scored", ["best", "last"])
def test_checkpoint_best_or_last_scores_that_epoch_and_keeps_the_other(
        two_fold_run, tmp_path, monkeypatch, scored):
    """Validation loss 3, 1, 2 over three epochs: the best epoch is 1, the last 2. Each
    epoch's weights are read from the loop's own checkpoint as it reports the epoch."""
    from umsrep.runner.stage import run_stage
    from umsrep.train import hooks
    from umsrep.train.checkpoint import LAST

    original = hooks.ValidationHook.after_epoch

    def fixed_loss(self, state):
        original(self, state)
        state.metrics["val/loss"] = [3.0, 1.0, 2.0][state.epoch]

    monkeypatch.setattr(hooks.ValidationHook, "after_epoch", fixed_loss)
    exp, out, run_dir = two_fold_run
    run = prepare_run(exp, out, resume=run_dir)
    train = replace(exp.train, epochs=3, checkpoint=scored)
    ctx = replace(run.ctx, exp=replace(exp, train=train))
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def report(epoch, metrics, ckpt_dir):
        weights[epoch] = torch.load(ckpt_dir / LAST, weights_only=True)["model"]

    stage = run.plan.by_id()["f0-independent-abnormal"]
    result = run_stage(ctx, stage, report=report, out_dir=tmp_path / "stage")
    other = "last" if scored == "best" else "best"
    epoch = {"best": 1, "last": 2}
    assert (result["scored_checkpoint"], result["best_epoch"], result["last_epoch"]) == (
        scored, 1, 2)
    head = "heads.abnormal."
    assert any(not torch.equal(weights[1][k], weights[2][k]) for k in weights[1]
               if k.startswith(head))  # the two epochs' weights do differ
    for folder, which in (("checkpoint", scored), (f"checkpoint_{other}", other)):
        saved = torch.load(tmp_path / "stage" / folder / "model.pt", weights_only=True)
        meta = json.loads((tmp_path / "stage" / folder / "model.json").read_text())
        assert (meta["checkpoint"], meta["epoch"]) == (which, epoch[which])
        for k, v in weights[epoch[which]].items():
            torch.testing.assert_close(saved[k], v, rtol=0, atol=0, msg=f"{folder}: {k}")


def test_ray_driver_scores_missing_ensembles_in_its_own_process(caplog, two_fold_run, tmp_path):
    """After its waves the Ray driver scores the fold ensembles itself (no trial, no Ray call):
    on a copy of the run without the joint ensemble, only that one is scored again."""
    import shutil

    from sweeps.driver import RayDriver

    exp, out, run_dir = two_fold_run
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "ensembles" / "joint")
    kept = {p: p.stat().st_mtime_ns for p in copy.glob("ensembles/*/result.json")}
    with caplog.at_level(logging.INFO, logger="sweeps.driver"):
        RayDriver(prepare_run(exp, out, resume=copy), exp).score_ensembles()
    assert "joint: fold ensemble scored" in caplog.text
    assert (copy / "ensembles" / "joint" / "result.json").exists()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    metrics = pd.read_parquet(copy / "metrics.parquet")
    assert not metrics[metrics.fold == -1].duplicated(["strategy", "task", "split", "metric"]).any()
    assert set(metrics[metrics.fold == -1].strategy) == {"independent", "alternating", "joint",
                                                         "baseline"}


def test_runs_made_before_train_checkpoint_existed_still_resume(tiny_config, tmp_path):
    """A config.yaml without train.checkpoint was trained on the best epoch: resuming it with the
    default is allowed, with checkpoint: last it is refused."""
    import yaml

    from umsrep.config import ConfigError
    from umsrep.runner.runfolder import check_resume_config, write_config

    exp = load_experiment(data=tiny_config)
    write_config(tmp_path, exp)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for section in (saved["experiment"]["train"], saved["experiment"]["backbone"]["train"]):
        assert section.pop("checkpoint") == "best"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_resume_config(tmp_path, exp)
    last = replace(exp, train=replace(exp.train, checkpoint="last"))
    with pytest.raises(ConfigError) as err:
        check_resume_config(tmp_path, last)
    assert err.value.key == "train"


def test_runs_made_before_tasks_had_one_shape_still_resume(tiny_config, tmp_path):
    """Run folders of the TaskConfig days stored ``column: ''`` for a segmentation task's mask:
    the same task now reads ``column: mask`` and still resumes; another loss is refused."""
    import yaml

    from umsrep.config import ConfigError
    from umsrep.runner.runfolder import check_resume_config, write_config

    exp = load_experiment(data=tiny_config)
    write_config(tmp_path, exp)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    seg = [t for t in saved["experiment"]["tasks"] if t["kind"] == "segmentation"]
    assert seg and all(t["column"] == "mask" for t in seg)
    for t in seg:
        t["column"] = ""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_resume_config(tmp_path, exp)
    other = replace(exp, tasks=[replace(t, loss="mse") if t.kind == "segmentation" else t
                                for t in exp.tasks])
    with pytest.raises(ConfigError) as err:
        check_resume_config(tmp_path, other)
    assert err.value.key == "tasks"


def test_report_tables_show_the_ensemble_beside_the_fold_statistics(two_fold_run):
    """The runner's own run folder through the analysis: fold statistics over the two folds,
    the ensemble in its own column, no test pairing the ensemble's rows."""
    from analysis.load import load_runs
    from analysis.report import ReportOptions, build_tables

    _, _, run_dir = two_fold_run
    data = load_runs([run_dir])
    tables = build_tables(data, ReportOptions(n_resamples=50))
    summary = tables["metric_summary"]
    joint = summary[(summary.strategy == "joint") & (summary.task == "abnormal")
                    & (summary.metric == "accuracy")].iloc[0]
    metrics = data.metrics
    folds = metrics[(metrics.strategy == "joint") & (metrics.task == "abnormal")
                    & (metrics.metric == "accuracy") & (metrics.split == "test")]
    assert joint["n_folds"] == 2
    assert joint["mean"] == pytest.approx(folds[folds.fold >= 0]["value"].mean())
    assert joint["ensemble"] == pytest.approx(folds[folds.fold == -1]["value"].item())
    assert "dice_orig (ensemble)" in tables["metrics"].columns
    assert (tables["mcnemar"]["n_pairs"] <= 2 * 16).all()  # 2 fold models x 16 test images


def test_bench_augment_shift_reads_a_run_and_its_views_agree_without_augmentation(
        two_fold_run, capsys):
    """``bench/augment_shift.py`` on a real run folder: one row per view for every two-class
    classifier it is asked about; the tiny run trains without augmentation, so its untouched
    and "augmented" views are the same images and must give the same figures."""
    _, _, run_dir = two_fold_run
    bench = _load_bench("augment_shift")
    assert bench.main([str(run_dir), "--stages", "f0-joint,f1-baseline-abnormal"]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    rows = [ln for ln in lines if len(ln) == 8 and ln[2] in ("untouched", "augmented")]
    assert {(r[0], r[2]) for r in rows} == {(s, v) for s in ("f0-joint", "f1-baseline-abnormal")
                                            for v in ("untouched", "augmented")}
    by = {(r[0], r[2]): [float(x) for x in r[3:]] for r in rows}
    for stage in ("f0-joint", "f1-baseline-abnormal"):
        assert by[(stage, "untouched")] == by[(stage, "augmented")]
        assert 0 <= by[(stage, "untouched")][0] <= 1
    with pytest.raises(SystemExit):  # a misspelt stage is named, not silently skipped
        bench.main([str(run_dir), "--stages", "f0-jiont"])
    assert "f0-jiont" in capsys.readouterr().err


def _load_bench(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adapt_batch_norm_holds_the_target_images_statistics_and_leaves_the_model_alone():
    """AdaBN (``bench/classify_tta.py --adapt-bn``): the copy's batch norm holds the mean of
    what reaches it over all the images, in batches of any size, and their variance (exactly in
    one batch, the mean of the batches' in several); the model it was copied from keeps its own
    statistics and stays in eval mode."""
    bench = _load_bench("classify_tta")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU()).eval()
    before = model[1].running_mean.clone()
    images = torch.randn(10, 1, 8, 8) * 2 + 5  # a "site" brighter than the model's
    adapted = bench.adapt_batch_norm(model, images, batch_size=5)
    with torch.no_grad():
        feats = model[0](images)  # what the batch norm sees: [10, 3, 6, 6]
    torch.testing.assert_close(adapted[1].running_mean, feats.mean((0, 2, 3)))
    whole = bench.adapt_batch_norm(model, images, batch_size=10)  # one batch: its variance
    torch.testing.assert_close(whole[1].running_var, feats.var((0, 2, 3)))
    torch.testing.assert_close(adapted[1].running_var, feats.var((0, 2, 3)), rtol=0.1, atol=0)
    torch.testing.assert_close(model[1].running_mean, before)
    assert not model.training and not adapted.training
    assert not torch.allclose(adapted[1].running_mean, before)


def test_trim_black_edges_cuts_letterbox_bands_and_nothing_else():
    """``bench/classify_tta.py --trim``: black rows and columns at a film's edges go (a
    Montgomery-like band at the bottom, a frame), dark rows inside the film stay, and a film
    that is black throughout comes back whole."""
    bench = _load_bench("classify_tta")
    film = np.full((40, 30), 120, np.uint8)
    film[20] = 0  # a dark row inside the film is anatomy, not a band
    banded = np.zeros((50, 34), np.uint8)
    banded[2:42, 2:32] = film  # a 2 px frame and an 8 px band at the bottom
    np.testing.assert_array_equal(bench.trim_black_edges(banded), film)
    np.testing.assert_array_equal(bench.trim_black_edges(film), film)
    wide = np.zeros((10, 10), np.uint16)
    wide[:, 3:] = 30000  # 16-bit films on their own scale
    assert bench.trim_black_edges(wide).shape == (10, 7)
    black = np.zeros((6, 6), np.uint8)
    assert bench.trim_black_edges(black) is black


def test_widen_guides_dilates_every_guided_head_of_an_ensemble_and_nothing_else():
    """``--dilate-guide PX``: each guided classification head of the ensemble's members gets
    PX more ``dilate`` (on top of its own), so its output becomes that of a head built with the
    wider guide; a head without a guide is left alone and counted out."""
    from umsrep.models import BackboneSpec, ModelSpec, build_model
    from umsrep.tasks import Task

    lung = Task(name="lung", kind="segmentation", column="mask", head="seg_cdae",
                head_kwargs={"skips": True}, loss="bce_dice")

    def _model(*lung_task, **head_kwargs):
        tb = Task(name="tb", kind="classification", column="abnormal", classes=("0", "1"),
                  head="classification", head_kwargs=head_kwargs, loss="cross_entropy")
        torch.manual_seed(0)
        model = build_model(ModelSpec(backbone=BackboneSpec(name="cdae", preset="tiny",
                                                            width=None),
                                      tasks=(*lung_task, tb), image_size=32)).eval()
        if lung_task:  # an untrained lung head is ~0.5 everywhere: give its mask some shape
            last = [m for m in model.heads["lung"].modules() if isinstance(m, nn.Conv2d)][-1]
            last.weight.data.mul_(1000.0)
        return model

    bench = _load_bench("classify_tta")
    guided = [_model(lung, guide="lung", dilate=d) for d in (0, 2)]
    wider = [_model(lung, guide="lung", dilate=d) for d in (3, 5)]
    kinds = {"lung": "segmentation", "tb": "classification"}
    ensemble = MeanEnsemble(guided, kinds).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        before = ensemble(x, ["tb"])["tb"]
        assert bench.widen_guides(ensemble, 3) == 2
        assert [m.heads["tb"].dilate for m in guided] == [3, 5]
        torch.testing.assert_close(ensemble(x, ["tb"])["tb"],
                                   MeanEnsemble(wider, kinds).eval()(x, ["tb"])["tb"])
        assert not torch.allclose(before, ensemble(x, ["tb"])["tb"])
    unguided = _model()  # no lung head: nothing to widen
    assert bench.widen_guides(unguided, 3) == 0 and unguided.heads["tb"].dilate == 0


def test_bench_classify_tta_scores_each_view_with_and_without_adapted_batch_norm(
        two_fold_run, capsys):
    """``--adapt-bn`` on a real run folder's fold ensembles: each view list gets a ``+adabn``
    twin with AUCs in [0, 1] for every dataset with labels."""
    bench = _load_bench("classify_tta")
    _, _, run_dir = two_fold_run
    assert bench.main([str(run_dir), "--ensembles", "--adapt-bn", "--tta", "pad;pad,stretch"]) == 0
    out = capsys.readouterr().out
    header = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["tta"])
    assert header[1:] == ["pad", "pad+adabn", "pad,stretch", "pad,stretch+adabn"]


def test_the_other_checkpoint_gets_a_threshold_chosen_for_its_own_weights(
        two_fold_run, tmp_path, monkeypatch):
    """checkpoint_last/ holds the last epoch's weights: its model.json threshold is chosen on
    the held-out fold with those weights (it was the scored epoch's, copied), and the stage's
    model is given back its scored weights."""
    from umsrep.runner import threshold as threshold_mod
    from umsrep.runner.stage import run_stage
    from umsrep.train import hooks
    from umsrep.train.checkpoint import LAST

    original = hooks.ValidationHook.after_epoch

    def fixed_loss(self, state):
        original(self, state)
        state.metrics["val/loss"] = [3.0, 1.0, 2.0][state.epoch]

    monkeypatch.setattr(hooks.ValidationHook, "after_epoch", fixed_loss)
    seen = {}
    real = threshold_mod.held_out_dice

    def other_dice(ctx, fold, model, tasks, clean=None, device=None):
        seen["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
        dice = real(ctx, fold, model, tasks, clean, device)
        return {t: np.eye(len(threshold_mod.GRID))[[0] * len(d)] for t, d in dice.items()}

    monkeypatch.setattr(threshold_mod, "held_out_dice", other_dice)  # only the other's choice
    exp, out, run_dir = two_fold_run
    run = prepare_run(exp, out, resume=run_dir)
    ctx = replace(run.ctx, exp=replace(exp, train=replace(exp.train, epochs=3)))
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def report(epoch, metrics, ckpt_dir):
        weights[epoch] = torch.load(ckpt_dir / LAST, weights_only=True)["model"]

    stage = run.plan.by_id()["f0-independent-lung"]
    result = run_stage(ctx, stage, report=report, out_dir=tmp_path / "stage")
    assert (result["best_epoch"], result["last_epoch"]) == (1, 2)
    last = json.loads((tmp_path / "stage" / "checkpoint_last" / "model.json").read_text())
    scored = json.loads((tmp_path / "stage" / "checkpoint" / "model.json").read_text())
    assert last["threshold"] == {"lung": threshold_mod.GRID[0]}
    assert scored["threshold"] == result["threshold"]  # the scored weights' own choice
    for k, v in weights[2].items():  # chosen with the last epoch's weights
        torch.testing.assert_close(seen["weights"][k], v, rtol=0, atol=0)
    saved = torch.load(tmp_path / "stage" / "checkpoint" / "model.pt", weights_only=True)
    for k, v in weights[1].items():  # and the scored folder still holds the best epoch's
        torch.testing.assert_close(saved[k], v, rtol=0, atol=0)
