"""Fold ensembles: the external test set scored by the mean of the k fold models' probabilities.

A *template* is a stage id without its fold (``joint``, ``alternating``, ``independent-lung``,
``baseline-abnormal``): one model trained on each of the k folds. Once every fold's stage of a
template is done, ``run_ensembles`` loads the k checkpoints (``umsrep.predict.load_model_dir``,
the factory ``umsrep predict`` uses) into a ``MeanEnsemble`` and scores the external test
splits (``test`` and each ``test:<dataset>``) as a fold model's are scored, in rows with
``fold = -1`` (``umsrep/schema.py``):

- classification: accuracy, f1, mcc (and auc) of the mean class probabilities; the
  predictions' ``score`` is the mean probability of the positive (or predicted) class;
- segmentation: ``dice_orig``, ``dice_orig_min``, ``iou_orig``: the mean probability map at each
  image's original size (with ``evaluation.tta``; bilinear resizing is linear, so the mean of
  the resized maps is the resized mean), cut at the threshold chosen on the k held-out folds
  (``umsrep.runner.threshold``: out-of-fold images, never the test set) and cleaned as
  original-size scoring does; the predictions carry each image's original-size Dice (``score``)
  and IoU.

It writes ``<run>/ensembles/<template>/``: ``metrics.parquet``, ``predictions.parquet``,
``model.json`` (the first member's, with ``members``: the k checkpoint folders relative to it,
and the ensemble's ``threshold``; ``umsrep predict`` takes the folder) and ``result.json``,
written last: its presence marks the ensemble done, so a resumed run skips it. Inference only.
Without an external test set the test split is each fold's own held-out part, scored by one
model only: there is nothing to ensemble.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from umsrep.models.ensemble import MeanEnsemble
from umsrep.predict import load_model_dir
from umsrep.runner.context import (
    StageContext,
    eval_splits,
    labelled,
    loaders_for,
    mask_cleanup,
    noise_config,
)
from umsrep.runner.original_size import THRESHOLD, evaluate_original_size
from umsrep.runner.outputs import stage_done, write_stage_outputs
from umsrep.runner.plan import Plan, Stage
from umsrep.runner.store import atomic_write_json
from umsrep.runner.threshold import held_out_dice, threshold_record
from umsrep.tasks import Task
from umsrep.train.evaluate import evaluate

log = logging.getLogger(__name__)

ENSEMBLES = "ensembles"  # <run>/ensembles/<template>/
ENSEMBLE_FOLD = -1


def template_of(stage: Stage) -> str:
    """A stage's id without its fold (``f3-independent-lung`` -> ``independent-lung``)."""
    return stage.id.split("-", 1)[1]


def ensemble_groups(plan: Plan) -> dict[str, list[Stage]]:
    """Each template's stages, one per fold: head stages and the baseline's task models (not
    backbones, not the baseline's separate denoiser)."""
    groups: dict[str, list[Stage]] = {}
    for s in plan.stages:
        if s.kind == "head" or (s.kind == "baseline" and s.role == "model"):
            groups.setdefault(template_of(s), []).append(s)
    return groups


def run_ensembles(ctx: StageContext, plan: Plan) -> list[str]:
    """Score every template whose fold stages are all done and which has no ensemble yet;
    returns the templates scored now."""
    if not len(ctx.data.external):
        log.info("no external test set: no fold ensembles")
        return []
    scored = []
    for template, stages in ensemble_groups(plan).items():
        out = ctx.run_dir / ENSEMBLES / template
        if stage_done(out):
            continue
        if len(stages) < 2:
            log.info("%s: one fold model only; no fold ensemble", template)
            continue
        missing = [s.id for s in stages if not stage_done(ctx.run_dir / "stages" / s.id)]
        if missing:
            log.info("%s: no fold ensemble yet, not done: %s", template, ", ".join(missing))
            continue
        score_ensemble(ctx, template, stages, out)
        scored.append(template)
    return scored


def score_ensemble(ctx: StageContext, template: str, stages: list[Stage], out: Path) -> None:
    """Load the fold models, choose the threshold on their held-out folds, score the test
    splits and write the ensemble's folder (``result.json`` last)."""
    t0 = time.perf_counter()
    device = _device(ctx.device)
    tasks = [ctx.tasks[n] for n in stages[0].tasks]
    paths = [ctx.run_dir / "stages" / s.id / "checkpoint" for s in stages]
    loaded = [load_model_dir(p, device) for p in paths]
    members = [model for model, _ in loaded]
    dice: dict[str, list[np.ndarray]] = {}
    for stage, model in zip(stages, members, strict=True):
        found = held_out_dice(ctx, stage.fold, model, tasks, mask_cleanup(ctx.exp), device)
        for name, d in found.items():
            dice.setdefault(name, []).append(d)
    chosen = threshold_record({n: np.concatenate(d) for n, d in dice.items()},
                              ctx.exp.evaluation.threshold)
    model = MeanEnsemble(members, {t.name: t.kind for t in tasks}).to(device).eval()
    metrics, preds = score_test_splits(ctx, stages[0], model, tasks, chosen["threshold"], device)
    meta = {k: v for k, v in loaded[0][1].items() if k not in ("checkpoint", "epoch")}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json({**meta, "stage": f"ensemble-{template}", "fold": ENSEMBLE_FOLD,
                       "ensemble": template, "threshold": chosen["threshold"],
                       "members": [os.path.relpath(p, out) for p in paths]}, out / "model.json")
    result = {"ensemble": template, "fold": ENSEMBLE_FOLD, "kind": stages[0].kind,
              "strategy": stages[0].strategy, "task": stages[0].task_label, "status": "done",
              "members": [s.id for s in stages],
              "member_checkpoints": [m.get("checkpoint", "best") for _, m in loaded],
              "wall_s": time.perf_counter() - t0, **chosen}
    write_stage_outputs(out, result, metrics, preds)
    log.info("%s: fold ensemble of %d models scored in %.1f s", template, len(members),
             result["wall_s"])


def _device(device: str) -> str:
    """The run's device, or the CPU when it names a GPU this process has not got (a Ray
    driver on a head node without one)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return device


def score_test_splits(ctx: StageContext, stage: Stage, model, tasks: list[Task],
                      thresholds: dict[str, float], device: str
                      ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Metric rows and predictions (``fold = -1``) of ``model`` on every external test split."""
    metrics: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    bs = max(ctx.exp.train.batch_size, 16)
    for split, positions in eval_splits(ctx, stage).items():
        scored = [t for t in tasks if len(labelled(ctx, positions, t))]
        if not split.startswith("test") or not scored:
            continue
        loaders = loaders_for(ctx, scored, positions, train=False, batch_size=bs, seed=0)
        rows, preds = score_tasks(ctx, model, scored, loaders, thresholds, device)
        metrics += [{"fold": ENSEMBLE_FOLD, "strategy": stage.strategy, "split": split,
                     "noise": row.get("noise", "") or "", "task": row["task"],
                     "metric": row["metric"], "value": float(row["value"])} for row in rows]
        frames.append(preds.assign(fold=ENSEMBLE_FOLD, strategy=stage.strategy, split=split))
    return metrics, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def score_tasks(ctx: StageContext, model, tasks: list[Task], loaders: dict[str, Any],
                thresholds: dict[str, float], device: str
                ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Segmentation at the original size (cut at ``thresholds``); other tasks as
    ``umsrep.train.evaluate`` scores a fold model."""
    others = [t for t in tasks if t.kind != "segmentation"]
    rows, preds = evaluate(model, others, {t.name: loaders[t.name] for t in others},
                           noise_config(ctx.exp), device=device,
                           correct_iou=ctx.exp.evaluation.correct_iou) if others else ([], None)
    frames = [preds] if preds is not None and len(preds) else []
    for t in tasks:
        if t.kind != "segmentation":
            continue
        m, scores = evaluate_original_size(
            model, t, loaders[t.name], ctx.data.index, device=device, fit=ctx.exp.data.fit,
            tta=ctx.exp.evaluation.tta, clean=mask_cleanup(ctx.exp),
            threshold=thresholds.get(t.name, THRESHOLD), contrast=ctx.exp.data.contrast)
        rows += m
        frames.append(pd.DataFrame({
            "sample_id": scores["sample_id"].astype(str), "y_true": 1,
            "y_pred": (scores["iou"] >= ctx.exp.evaluation.correct_iou).astype("int64"),
            "score": scores["dice"], "iou": scores["iou"], "task": t.name}))
    return rows, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
