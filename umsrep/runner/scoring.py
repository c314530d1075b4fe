"""A trained stage's scores: metrics and predictions on every split (``eval_splits``), with
segmentation also scored at each image's original size on the test splits."""

from __future__ import annotations

from typing import Any

import pandas as pd

from umsrep.runner.context import StageContext, eval_splits, labelled, loaders_for, mask_cleanup
from umsrep.runner.original_size import THRESHOLD, evaluate_original_size
from umsrep.runner.plan import Stage
from umsrep.tasks import Task
from umsrep.train.evaluate import evaluate


def evaluate_model(ctx: StageContext, stage: Stage, model, tasks: list[Task], strategy: str,
                   noise_cfg, thresholds: dict[str, float] | None = None
                   ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Metrics and predictions of every split; ``thresholds`` (segmentation task -> threshold
    chosen on the held-out fold, ``umsrep.runner.threshold``) cut the original-size masks."""
    metrics: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    bs = max(ctx.exp.train.batch_size, 16)
    for split, positions in eval_splits(ctx, stage).items():
        scored = [t for t in tasks if len(labelled(ctx, positions, t))]  # e.g. no TB label in JSRT
        if not scored:
            continue
        loaders = loaders_for(ctx, scored, positions, train=False, batch_size=bs, seed=0)
        m, p = evaluate(model, scored, loaders, noise_cfg, device=ctx.device,
                        correct_iou=ctx.exp.evaluation.correct_iou)
        if split.startswith("test"):  # segmentation also at the original size (original_size.py)
            m = m + original_size_rows(ctx, model, scored, loaders, thresholds)
        for row in m:
            metrics.append({"fold": stage.fold, "strategy": strategy, "split": split,
                            "noise": row.get("noise", "") or "", "task": row["task"],
                            "metric": row["metric"], "value": float(row["value"])})
        p = p.assign(fold=stage.fold, strategy=strategy, split=split)
        preds.append(p)
    return metrics, pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()


def original_size_rows(ctx: StageContext, model, tasks: list[Task], loaders,
                       thresholds: dict[str, float] | None = None) -> list[dict]:
    """dice_orig / dice_orig_min / iou_orig rows of each segmentation task."""
    return [row for t in tasks if t.kind == "segmentation" for row in evaluate_original_size(
        model, t, loaders[t.name], ctx.data.index, device=ctx.device,
        fit=ctx.exp.data.fit, tta=ctx.exp.evaluation.tta,
        clean=mask_cleanup(ctx.exp), contrast=ctx.exp.data.contrast,
        threshold=(thresholds or {}).get(t.name, THRESHOLD))[0]]
