"""Compute-cost tables (the paper's Tables 4, 6, 8, 10) from ``stages.parquet``.

Times are minutes of training (``wall_s / 60``) averaged over the folds a stage ran in; failed
stages are left out. For each strategy the shared approach costs the backbone once plus that
strategy's head stages; the baseline costs the sum of its separate models (a separate denoiser
included when the run has one). The marginal cost of one more task is the mean cost of one
task's head (a multi-task head stage is split evenly over the tasks) versus the mean cost of one
separate task model (the baseline's denoiser, shared by its models, is not counted).

Per fold, a backbone trained once and reused by the other folds is charged to every fold (the
paper's Table 4 is one training). The whole run's totals (``run_*`` columns) count what was
actually trained: each backbone once (stages reusing it share its ``checkpoint``; the
baseline's separate denoiser is the same network on the same images, charged to both sides) and
every fold's heads or separate models.
"""

from __future__ import annotations

import json
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


def _head_params(run_stages: pd.DataFrame, strategy: str, backbone_counted: bool) -> int:
    """Parameters ``strategy``'s head stages add to the shared model: each stage's trainable
    parameters (the largest over folds), less those of the shared backbone it fine-tunes
    (``backbone_params``: joint, alternating) when a backbone stage already counts them, so a
    parameter is counted once however many stages train it."""
    heads = run_stages[(run_stages["kind"] == "head") & (run_stages["strategy"] == strategy)
                       & (run_stages["status"] == "done")]
    shared = heads["backbone_params"] if "backbone_params" in heads else 0
    added = heads["trainable_params"] - (shared if backbone_counted else 0)
    return int(added.groupby(heads["task"]).max().sum()) if len(heads) else 0


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
            head_params = _head_params(stages[stages["run"] == run], strategy, len(backbone))
            shared_params = backbone["trainable_params"].sum() + head_params
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
                    "marginal_shared_params": head_params / n_tasks,
                    "marginal_baseline_params": base_models["trainable_params"].mean()
                    if len(base_models)
                    else np.nan,
                    **_run_totals(stages[stages["run"] == run], strategy, len(base)),
                }
            )
    return pd.DataFrame(rows)


HEAD_COST_COLUMNS = ["run", "strategy", "task", "head_minutes", "model_minutes", "ratio",
                     "head_params", "model_params", "split", "split_by"]


def head_costs(stages: pd.DataFrame) -> pd.DataFrame:
    """What one more head costs, task by task: each strategy's head for the task against the
    task's own separate model (issue 10's "one more head <= 0.15x of a separate model").

    Minutes per fold (means over folds). A head stage that trains several tasks (joint,
    alternating, a one-stage independent run) is shared out over them: by the seconds of the
    training steps that trained each task (``task_seconds``; ``split_by`` "step time": an
    alternating stage's turns as timed, a joint step's time shared evenly), or evenly for a
    stage written without them (``split_by`` "even"). Its parameters are shared evenly.
    ``ratio`` = head / model minutes; NaN without a separate model for the task. ``split``:
    the minutes hold such a share (a share of one network's training, not what adding the head
    costs; ``bench/marginal_head.py`` measures that per step). Columns ``HEAD_COST_COLUMNS``.
    """
    costs = stage_costs(stages)
    done = stages[stages["status"] == "done"]
    rows = []
    for run, c in costs.groupby("run", sort=False):
        models = c[(c["kind"] == "baseline") & ~c["task"].isin(["", "denoise"])]
        model_of = {str(r.task): r for r in models.itertuples(index=False)}
        heads = c[c["kind"] == "head"]
        multi = done[(done["run"] == run) & (done["kind"] == "head") & (done["task"] == "")]
        timed = {t for v in (multi["task_seconds"] if "task_seconds" in multi else [])
                 for t in _parse_task_seconds(v)}  # what the multi-task stages trained
        tasks = sorted(set(model_of) | {str(t) for t in heads["task"] if t} | timed) or [""]
        for strategy, h in heads.groupby("strategy", sort=False):
            shared = h[h["task"] == ""]
            share, split_by = _task_shares(multi[multi["strategy"] == strategy], tasks)
            for task in tasks:
                own = h[h["task"] == task] if task else h.iloc[:0]  # "": the shared rows
                if not len(own) and not len(shared):
                    continue
                minutes = own["minutes"].sum() + share.get(task, 0.0)
                params = own["trainable_params"].sum() + shared["trainable_params"].sum() \
                    / len(tasks)
                model = model_of.get(task)
                rows.append({
                    "run": run, "strategy": strategy, "task": task, "head_minutes": minutes,
                    "model_minutes": model.minutes if model else np.nan,
                    "ratio": minutes / model.minutes if model and model.minutes else np.nan,
                    "head_params": int(params),
                    "model_params": model.trainable_params if model else np.nan,
                    "split": bool(len(shared)), "split_by": split_by,
                })
    return pd.DataFrame(rows, columns=HEAD_COST_COLUMNS)


def _task_shares(shared: pd.DataFrame, tasks: list[str]) -> tuple[dict[str, float], str]:
    """Each task's minutes per fold (mean over folds) of the multi-task stages ``shared``, and
    how they were shared out: "step time" when every stage kept its steps' seconds per task,
    "even" otherwise, "" without such stages. ``tasks`` holds every task the stages timed, so
    the shares add up to the stages' minutes."""
    if not len(shared):
        return {}, ""
    column = shared["task_seconds"] if "task_seconds" in shared else [""] * len(shared)
    seconds = [_parse_task_seconds(v) for v in column]
    timed = all(sum(s.values()) > 0 for s in seconds)
    per_fold: dict[int, dict[str, float]] = {}
    for fold, wall_s, s in zip(shared["fold"], shared["wall_s"], seconds, strict=True):
        total = sum(s.values())
        fold_share = per_fold.setdefault(int(fold), {})
        for task in tasks:
            part = s.get(task, 0.0) / total if timed else 1.0 / len(tasks)
            fold_share[task] = fold_share.get(task, 0.0) + wall_s / 60.0 * part
    n = len(per_fold)
    return ({task: sum(f.get(task, 0.0) for f in per_fold.values()) / n for task in tasks},
            "step time" if timed else "even")


def _parse_task_seconds(value) -> dict[str, float]:
    """``stages.parquet``'s ``task_seconds`` (JSON; "" or missing: none)."""
    if not isinstance(value, str) or not value:
        return {}
    try:
        parsed = json.loads(value)
        return {str(k): float(v) for k, v in parsed.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"stages.parquet task_seconds {value!r}: expected a JSON object of "
                         "task -> seconds (umsrep/schema.py)") from exc


def _trained_once(rows: pd.DataFrame) -> float:
    """Seconds of ``rows``, a stored network (same non-empty ``checkpoint``) counted once."""
    stored = rows["checkpoint"].fillna("").astype(str) != ""
    once = rows[stored].drop_duplicates("checkpoint")
    return float(once["wall_s"].sum() + rows[~stored]["wall_s"].sum())


def _run_totals(run_stages: pd.DataFrame, strategy: str, has_baseline: int) -> dict[str, float]:
    """The whole run's minutes for ``strategy`` and the baseline (module docstring)."""
    done = run_stages[run_stages["status"] == "done"]
    pretrain = done[(done["kind"] == "backbone")
                    | ((done["kind"] == "baseline") & (done["task"] == "denoise"))]
    heads = done[(done["kind"] == "head") & (done["strategy"] == strategy)]
    models = done[(done["kind"] == "baseline") & (done["task"] != "denoise")]
    shared = (_trained_once(pretrain[pretrain["kind"] == "backbone"])
              + heads["wall_s"].sum()) / 60.0
    if not has_baseline:
        return {"run_shared_minutes": shared, "run_baseline_minutes": np.nan,
                "run_time_ratio": np.nan}
    # the baseline's denoiser: the stored backbone it shares (same checkpoint), once
    base = (_trained_once(pretrain[pretrain["kind"] == "baseline"]) + models["wall_s"].sum()) / 60.0
    return {"run_shared_minutes": shared, "run_baseline_minutes": base,
            "run_time_ratio": shared / base if base else np.nan}


def _reduction(shared: float, baseline: float) -> float:
    return float(100.0 * (baseline - shared) / baseline) if baseline else float("nan")


# ----------------------------------------------------------------------------- time to quality
# a task's main validation metric, first present wins (umsrep/train/hooks.py: MAIN_METRIC)
QUALITY_METRICS = ("dice", "auc", "accuracy", "psnr")
QUALITY_COLUMNS = [
    "run", "strategy", "task", "metric", "baseline_quality", "baseline_minutes",
    "shared_minutes", "folds_reached", "n_folds", "ratio", "run_ratio",
]


def _first_reaching(curve: pd.DataFrame, quality: float) -> float:
    """Seconds into a stage at the end of its first validated epoch with ``value >= quality``."""
    hit = curve[curve["value"] >= quality].sort_values("epoch")
    return float(hit["elapsed_s"].iloc[0]) if len(hit) else float("nan")


def _wall(stages: pd.DataFrame, **match) -> float:
    sel = stages
    for key, value in match.items():
        sel = sel[sel[key] == value]
    return float(sel["wall_s"].sum())


def time_to_quality(stages: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Minutes each strategy needs to reach the converged baseline's validation quality.

    Per run, fold and task with a separate baseline model: the baseline's quality is the best
    value of the task's main validation metric (``QUALITY_METRICS``) over its validated epochs;
    the baseline's time is its denoiser plus its training time up to that epoch; a strategy's
    time is the shared backbone plus its head stage's training time up to the first validated
    epoch at or above that quality (the paper's claim is about this, not about total time).
    Columns ``QUALITY_COLUMNS``: means over folds (the strategy's over the folds that reached
    the quality, ``folds_reached`` of ``n_folds``), ``ratio`` = shared / baseline minutes;
    ``run_ratio`` = the same over the whole run, each stored backbone (and the baseline's
    denoiser) counted once and the folds that reached the quality summed on both sides.
    Empty when the runs have no ``curves.parquet`` (made before it).
    """
    rows = []
    done = stages[stages["status"] == "done"]
    base_models = done[(done["kind"] == "baseline") & ~done["task"].isin(["", "denoise"])]
    for (run, task), models in base_models.groupby(["run", "task"], sort=False):
        c = curves[curves["run"] == run]
        per_fold: dict[str, list[tuple[float, float, float]]] = {}
        metric = None
        for fold in sorted(models["fold"].unique()):
            base = c[(c["kind"] == "baseline") & (c["task"] == task) & (c["fold"] == fold)]
            names = [m for m in QUALITY_METRICS if f"{task}/{m}" in set(base["metric"])]
            if not names:
                continue
            metric = names[0]
            base = base[base["metric"] == f"{task}/{metric}"]
            quality = float(base["value"].max())
            s = done[(done["run"] == run) & (done["fold"] == fold)]
            denoiser = _wall(s, kind="baseline", task="denoise")
            base_s = _first_reaching(base, quality)
            heads = c[(c["kind"] == "head") & (c["fold"] == fold)
                      & (c["metric"] == f"{task}/{metric}")]
            for strategy, curve in heads.groupby("strategy", sort=False):
                per_fold.setdefault(str(strategy), []).append(
                    (quality, denoiser, base_s, _wall(s, kind="backbone"),
                     _first_reaching(curve, quality)))
        in_run = done[done["run"] == run]
        backbone_once = _trained_once(in_run[in_run["kind"] == "backbone"])
        denoiser_once = _trained_once(in_run[(in_run["kind"] == "baseline")
                                             & (in_run["task"] == "denoise")])
        for strategy, values in per_fold.items():
            q, den, b, bb, sh = (np.array(v, dtype=float) for v in zip(*values, strict=True))
            base_total, shared_total = den + b, bb + sh
            reached = ~np.isnan(sh)
            shared = float(shared_total[reached].mean() / 60.0) if reached.any() else np.nan
            base_minutes = float(base_total.mean() / 60.0)
            run_ratio = ((backbone_once + sh[reached].sum())
                         / (denoiser_once + b[reached].sum()) if reached.any() else np.nan)
            rows.append({"run": run, "strategy": strategy, "task": task, "metric": metric,
                         "baseline_quality": float(q.mean()),
                         "baseline_minutes": base_minutes, "shared_minutes": shared,
                         "folds_reached": int(reached.sum()), "n_folds": len(values),
                         "ratio": shared / base_minutes if reached.any() else np.nan,
                         "run_ratio": float(run_ratio)})
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)
