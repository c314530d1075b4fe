"""Compute-cost tables (the paper's Tables 4, 6, 8, 10) from ``stages.parquet``.

Times are minutes of training (``wall_s / 60``) averaged over the folds a stage ran in; failed
stages are left out. For each strategy the shared approach costs the backbone once plus that
strategy's head stages; the baseline costs the sum of its separate models (a separate denoiser
included when the run has one). The marginal cost of one more task is the mean cost of one
task's head (a multi-task head stage is split evenly over the tasks) versus the mean cost of one
separate task model (the baseline's denoiser, shared by its models, is not counted).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

STAGE_COLUMNS = [
    "run",
    "approach",
    "strategy",
    "kind",
    "task",
    "stage",
    "n_folds",
    "minutes",
    "minutes_std",
    "trainable_params",
]


def _stage_label(kind: str, strategy: str, task: str) -> str:
    if kind == "backbone":
        return "shared backbone"
    if kind == "baseline":
        return f"separate model: {task or 'all tasks'}"
    return f"{strategy} head: {task or 'all tasks'}"


def stage_costs(stages: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, kind, strategy, task) stage with mean/std minutes over folds and the
    trainable parameter count (the largest seen; it is the same in every fold)."""
    failed = stages[stages["status"] != "done"]
    if len(failed):
        log.warning("%d failed stage(s) left out of the cost tables", len(failed))
    done = stages[stages["status"] == "done"].assign(minutes=lambda d: d["wall_s"] / 60.0)
    rows = []
    for (run, kind, strategy, task), g in done.groupby(
        ["run", "kind", "strategy", "task"], sort=False
    ):
        per_fold = g.groupby("fold")["minutes"].sum()
        rows.append(
            {
                "run": run,
                "approach": "baseline" if kind == "baseline" else "shared",
                "strategy": strategy,
                "kind": kind,
                "task": task,
                "stage": _stage_label(kind, strategy, task),
                "n_folds": len(per_fold),
                "minutes": float(per_fold.mean()),
                "minutes_std": float(per_fold.std(ddof=1)) if len(per_fold) > 1 else float("nan"),
                "trainable_params": int(g["trainable_params"].max()),
            }
        )
    return pd.DataFrame(rows, columns=STAGE_COLUMNS)


def _n_tasks(run_stages: pd.DataFrame) -> int:
    """Target tasks of a run: its separate baseline models (denoiser excluded), else its
    task-specific heads."""
    base = run_stages[
        (run_stages["kind"] == "baseline") & ~run_stages["task"].isin(["", "denoise"])
    ]
    heads = run_stages[(run_stages["kind"] == "head") & (run_stages["task"] != "")]
    return max(base["task"].nunique(), heads["task"].nunique(), 1)


def cost_summary(stages: pd.DataFrame) -> pd.DataFrame:
    """Per run and strategy: shared vs baseline totals, % reduction and marginal cost per task.

    Columns: run, strategy, shared_minutes, baseline_minutes, time_reduction_pct, shared_params,
    baseline_params, params_reduction_pct, marginal_shared_minutes, marginal_baseline_minutes,
    marginal_shared_params, marginal_baseline_params. Reductions are
    ``100 * (baseline - shared) / baseline`` (NaN without a baseline).
    """
    costs = stage_costs(stages)
    rows = []
    for run, c in costs.groupby("run", sort=False):
        n_tasks = _n_tasks(stages[stages["run"] == run])
        backbone = c[c["kind"] == "backbone"]
        base = c[c["kind"] == "baseline"]
        base_models = base[~base["task"].isin(["", "denoise"])]
        base_min, base_params = base["minutes"].sum(), base["trainable_params"].sum()
        for strategy, heads in c[c["kind"] == "head"].groupby("strategy", sort=False):
            shared_min = backbone["minutes"].sum() + heads["minutes"].sum()
            shared_params = backbone["trainable_params"].sum() + heads["trainable_params"].sum()
            rows.append(
                {
                    "run": run,
                    "strategy": strategy,
                    "shared_minutes": shared_min,
                    "baseline_minutes": base_min if len(base) else np.nan,
                    "time_reduction_pct": _reduction(shared_min, base_min) if len(base) else np.nan,
                    "shared_params": int(shared_params),
                    "baseline_params": int(base_params) if len(base) else np.nan,
                    "params_reduction_pct": _reduction(shared_params, base_params)
                    if len(base)
                    else np.nan,
                    "marginal_shared_minutes": heads["minutes"].sum() / n_tasks,
                    "marginal_baseline_minutes": base_models["minutes"].mean()
                    if len(base_models)
                    else np.nan,
                    "marginal_shared_params": heads["trainable_params"].sum() / n_tasks,
                    "marginal_baseline_params": base_models["trainable_params"].mean()
                    if len(base_models)
                    else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _reduction(shared: float, baseline: float) -> float:
    return float(100.0 * (baseline - shared) / baseline) if baseline else float("nan")
