"""Creating a run folder and composing its tables from the stage folders (schema in
``umsrep/schema.py``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
from pathlib import Path

import pandas as pd
import yaml

from umsrep.config import ConfigError, to_dict
from umsrep.experiment import (
    BackboneConfig,
    BaselineConfig,
    DataConfig,
    EvaluationConfig,
    Experiment,
    FoldsConfig,
    TrainConfig,
)
from umsrep.runner.environment import write_environment
from umsrep.runner.plan import Plan
from umsrep.runner.samples import compose_samples
from umsrep.runner.store import atomic_write_parquet, atomic_write_yaml, read_json
from umsrep.schema import (
    CURVES_COLUMNS,
    METRICS_COLUMNS,
    PREDICTIONS_COLUMNS,
    SCHEMA_VERSION,
    STAGES_COLUMNS,
)
from umsrep.tasks import Task


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def new_run_dir(output: Path, name: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run = Path(output) / f"{name}-{stamp}"
    i = 1
    while run.exists():
        run = Path(output) / f"{name}-{stamp}-{i}"
        i += 1
    run.mkdir(parents=True)
    return run


def write_config(run_dir: Path, exp: Experiment, extra: dict | None = None) -> None:
    """``config.yaml``, and ``environment.json``: the versions that produce the run."""
    atomic_write_yaml({"schema_version": SCHEMA_VERSION, "git_revision": git_revision(),
                       **(extra or {}), "experiment": exp.to_dict()}, run_dir / "config.yaml")
    write_environment(run_dir)


# what a run's results depend on: a resumed run must keep them (resources, search budget, paths
# and the report's paper figures may change)
RESUME_FIXED = ("data", "tasks", "backbone", "strategies", "baseline", "folds", "train",
                "evaluation", "seed")
RESUME_FREE_DATA = ("root", "cache_dir")
TASK_FIELDS = {f.name for f in dataclasses.fields(Task)}


def check_resume_config(run_dir: Path, exp: Experiment) -> None:
    """Refuse to resume ``run_dir`` with settings its finished stages were not trained with."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return
    before = (yaml.safe_load(path.read_text()) or {}).get("experiment", {})
    now = exp.to_dict()
    for key in RESUME_FIXED:
        old, new = before.get(key), now.get(key)
        if key == "data" and isinstance(old, dict) and isinstance(new, dict):
            old = {k: v for k, v in old.items() if k not in RESUME_FREE_DATA}
            new = {k: v for k, v in new.items() if k not in RESUME_FREE_DATA}
        if key == "tasks":
            old = _tasks_as_now(old)
        new = _added_defaults_dropped(old, new, section_defaults().get(key))
        if key in before and old != new:
            raise ConfigError(key, f"differs from the run being resumed ({path}); resume with "
                                   "the same settings, or start a new run")


def _tasks_as_now(tasks):
    """A run folder's ``tasks`` as this umsrep writes them: run folders written before tasks
    had one shape (``umsrep.tasks.Task``) kept ``column: ''`` for ``mask`` and generic defaults
    for an unset head and loss."""
    if not isinstance(tasks, list):
        return tasks
    try:
        return [to_dict(Task.from_dict({k: v for k, v in t.items()
                                        if v != "" and k in TASK_FIELDS}, "tasks"))
                for t in tasks]
    except (ConfigError, AttributeError, TypeError):
        return tasks


def section_defaults() -> dict[str, dict]:
    """The default of every experiment section that has one, as plain data."""
    return {"data": to_dict(DataConfig()), "backbone": to_dict(BackboneConfig()),
            "baseline": to_dict(BaselineConfig()), "folds": to_dict(FoldsConfig()),
            "train": to_dict(TrainConfig()), "evaluation": to_dict(EvaluationConfig())}


def _added_defaults_dropped(old, new, default):
    """``new`` without the keys ``old`` lacks whose value is the default: a setting added to
    umsrep after the run was made (e.g. ``train.checkpoint``), at the value the run had."""
    if not (isinstance(old, dict) and isinstance(new, dict) and isinstance(default, dict)):
        return new
    return {k: _added_defaults_dropped(old[k], v, default.get(k)) if k in old else v
            for k, v in new.items() if k in old or v != default.get(k)}


def compose_tables(run_dir: Path, plan: Plan) -> dict[str, int]:
    """Rebuild stages/metrics/predictions.parquet from every finished stage folder and every
    finished fold ensemble (``ensembles/<template>/``)."""
    stages, metrics, preds, curves = [], [], [], []
    for stage in plan.stages:
        out = run_dir / "stages" / stage.id
        result = read_json(out / "result.json")
        if not result:
            continue
        stages.append({"fold": stage.fold, "kind": stage.kind, "strategy": stage.strategy,
                       "task": stage.task_label, "status": result.get("status", "done"),
                       "wall_s": float(result.get("wall_s", 0.0)),
                       "epochs": int(result.get("epochs", 0)),
                       "trainable_params": int(result.get("trainable_params", 0)),
                       "backbone_params": int(result.get("backbone_params", 0)),
                       "checkpoint": str(result.get("checkpoint", "")),
                       "task_seconds": json.dumps(result.get("task_seconds") or {},
                                                  sort_keys=True)})
        curves += [{"fold": stage.fold, "kind": stage.kind, "strategy": stage.strategy,
                    "task": stage.task_label, "epoch": int(point["epoch"]),
                    "elapsed_s": float(point["elapsed_s"]), "metric": key[len("val/"):],
                    "value": float(value)}
                   for point in result.get("curve") or [] for key, value in point.items()
                   if key.startswith("val/")]
        _read_outputs(out, metrics, preds)
    # fold ensembles (umsrep/runner/ensemble.py): fold = -1 rows, no training stage of their own
    for result in sorted((run_dir / "ensembles").glob("*/result.json")):
        if (read_json(result) or {}).get("status") == "done":
            _read_outputs(result.parent, metrics, preds)
    tables = {
        "stages.parquet": (pd.DataFrame(stages, columns=list(STAGES_COLUMNS)), STAGES_COLUMNS),
        "metrics.parquet": (_concat(metrics, METRICS_COLUMNS), METRICS_COLUMNS),
        "predictions.parquet": (_concat(preds, PREDICTIONS_COLUMNS), PREDICTIONS_COLUMNS),
        "curves.parquet": (pd.DataFrame(curves, columns=list(CURVES_COLUMNS)), CURVES_COLUMNS),
    }
    for name, (df, cols) in tables.items():
        atomic_write_parquet(df.astype(cols), run_dir / name)
    compose_samples(run_dir)
    return {name: len(df) for name, (df, _) in tables.items()}


def _read_outputs(folder: Path, metrics: list[pd.DataFrame], preds: list[pd.DataFrame]) -> None:
    for name, sink in (("metrics.parquet", metrics), ("predictions.parquet", preds)):
        if (folder / name).exists():
            df = pd.read_parquet(folder / name)
            if len(df):
                sink.append(df)


def _concat(frames: list[pd.DataFrame], cols: dict[str, str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=list(cols))
    return pd.concat(frames, ignore_index=True).reindex(columns=list(cols))
