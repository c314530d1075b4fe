"""A stage folder's tables (``<run>/stages/<stage id>/``): ``result.json`` (status, wall_s,
epochs, trainable_params, curve, ...), ``metrics.parquet`` and ``predictions.parquet``; the
model folders are ``umsrep.runner.checkpoints``', the galleries ``umsrep.runner.samples``'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from umsrep.runner.plan import Stage
from umsrep.runner.store import atomic_write_json, atomic_write_parquet, read_json
from umsrep.schema import METRICS_COLUMNS, PREDICTIONS_COLUMNS


def stage_result(stage: Stage, fit_result, params: int, checkpoint: str,
                 **extra) -> dict[str, Any]:
    """``result.json`` of a trained stage (``extra``: what its kind adds)."""
    return {"stage": stage.id, "fold": stage.fold, "kind": stage.kind,
            "strategy": stage.strategy, "task": stage.task_label, "status": "done",
            "wall_s": float(fit_result.wall_s), "epochs": int(fit_result.epochs_run),
            "trainable_params": int(params), "checkpoint": checkpoint,
            # the best value of the loop's monitored metric (validation loss by default)
            "best_monitored": float(fit_result.best_metric
                                    if fit_result.best_metric is not None else float("nan")),
            "history_epochs": [int(h.get("epoch", -1)) for h in fit_result.history],
            "epoch_s": [float(h.get("train/epoch_s", float("nan"))) for h in fit_result.history],
            "train_images": int(sum(h.get("train/images", 0) for h in fit_result.history)),
            "task_seconds": task_seconds(fit_result.history),
            "curve": validation_curve(fit_result.history),
            **extra}


def task_seconds(history: list[dict[str, float]]) -> dict[str, float]:
    """Seconds of training steps per task over the stage's epochs (``train/task_s/<task>``
    of ``umsrep.train.loop.run_epoch``)."""
    out: dict[str, float] = {}
    for h in history:
        for key, value in h.items():
            if key.startswith("train/task_s/"):
                task = key[len("train/task_s/"):]
                out[task] = out.get(task, 0.0) + float(value)
    return out


def validation_curve(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The validated epochs of a loop's history: ``epoch``, ``elapsed_s`` (training time so
    far, validation included) and every ``val/<task>/<metric>`` (the run's ``curves.parquet``)."""
    out = []
    for h in history:
        vals = {k: float(v) for k, v in h.items()
                if k.startswith("val/") and k.count("/") == 2 and not k.startswith("val/loss")}
        if vals:
            out.append({"epoch": int(h.get("epoch", -1)),
                        "elapsed_s": float(h.get("elapsed_s", float("nan"))), **vals})
    return out


def write_stage_outputs(out: Path, result: dict[str, Any], metrics: list[dict[str, Any]],
                        preds: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    m = pd.DataFrame(metrics, columns=list(METRICS_COLUMNS))
    atomic_write_parquet(m.astype(METRICS_COLUMNS), out / "metrics.parquet")
    p = preds.reindex(columns=list(PREDICTIONS_COLUMNS))
    atomic_write_parquet(p.astype(PREDICTIONS_COLUMNS), out / "predictions.parquet")
    atomic_write_json(result, out / "result.json")  # last: its presence marks the stage done


def stage_done(out: Path) -> bool:
    r = read_json(out / "result.json")
    return bool(r) and r.get("status") == "done"
