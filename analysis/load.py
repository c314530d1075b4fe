"""Load one or more run folders (schema in ``umsrep/schema.py``) into tidy DataFrames.

Every table gains a ``run`` column (the run folder's name, made unique when two folders share a
name) so several runs can be analysed side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from umsrep.schema import (
    CURVES_COLUMNS,
    METRICS_COLUMNS,
    PREDICTIONS_COLUMNS,
    SAMPLES_COLUMNS,
    SCHEMA_VERSION,
    STAGES_COLUMNS,
)

log = logging.getLogger(__name__)

# Columns a runner may leave out; they are filled with these values.
_OPTIONAL_DEFAULTS: dict[str, dict[str, object]] = {
    "metrics.parquet": {"noise": ""},
    "predictions.parquet": {"iou": float("nan"), "score": float("nan")},
    "stages.parquet": {"checkpoint": "", "epochs": 0, "task_seconds": "", "backbone_params": 0},
}


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


class RunFolderError(ValueError):
    """A run folder is missing a file or column, or has another schema version."""


@dataclass
class RunData:
    """The tables of one or more run folders, each with a ``run`` column.

    ``trials`` has ``run`` and ``stage`` (the ``tune/<stage>`` folder name) followed by the Tune
    columns (``config/<key>`` and the reported metrics); ``samples`` has an absolute ``file``
    column for each listed PNG. ``configs`` maps a run name to its parsed ``config.yaml``.
    """

    stages: pd.DataFrame
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    trials: pd.DataFrame
    samples: pd.DataFrame
    # validation curves (umsrep/schema.py: curves.parquet); empty for runs made before them
    curves: pd.DataFrame = field(
        default_factory=lambda: _empty({"run": "string", **CURVES_COLUMNS}))
    configs: dict[str, dict] = field(default_factory=dict)
    run_dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def runs(self) -> list[str]:
        return list(self.configs)


def _read_table(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise RunFolderError(
            f"{path}: missing; a run folder needs {path.name} (see umsrep/schema.py)"
        )
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise RunFolderError(f"{path}: cannot be read as Parquet ({exc})") from exc
    for col, default in _OPTIONAL_DEFAULTS.get(path.name, {}).items():
        if col not in df.columns:
            df[col] = default
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RunFolderError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)} "
            "(see umsrep/schema.py)"
        )
    try:
        return df.astype(columns)
    except (ValueError, TypeError) as exc:
        raise RunFolderError(
            f"{path}: a column has the wrong type ({exc}); expected {columns}"
        ) from exc


def load_config(run_dir: Path) -> dict:
    """Read ``config.yaml`` and check its ``schema_version`` against ``umsrep.schema``."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; is {run_dir} a umsrep run folder?")
    config = yaml.safe_load(path.read_text()) or {}
    version = config.get("schema_version")
    if version is None:
        raise RunFolderError(
            f"{path}: no schema_version key; expected schema_version: {SCHEMA_VERSION}"
        )
    if int(version) != SCHEMA_VERSION:
        raise RunFolderError(
            f"{path}: schema_version is {version}, this analysis reads version {SCHEMA_VERSION}; "
            "use the umsrep release that wrote this run"
        )
    return config


def load_trials(run_dir: Path) -> pd.DataFrame:
    """Concatenate ``tune/<stage>/trials.parquet`` files, adding a ``stage`` column."""
    frames = []
    for path in sorted((run_dir / "tune").glob("*/trials.parquet")):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:
            raise RunFolderError(f"{path}: cannot be read as Parquet ({exc})") from exc
        frames.append(df.assign(stage=path.parent.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["stage"])


def load_samples(run_dir: Path) -> pd.DataFrame:
    """Read ``samples/index.parquet`` and resolve each ``path`` to an absolute ``file``.

    A path is taken relative to the run folder, then to ``samples/``; listed files that do not
    exist are dropped with a warning naming them (galleries are optional).
    """
    index = run_dir / "samples" / "index.parquet"
    if not index.is_file():
        return pd.DataFrame(columns=[*SAMPLES_COLUMNS, "file"])
    df = _read_table(index, SAMPLES_COLUMNS)
    files = []
    for rel in df["path"]:
        candidates = [Path(rel), run_dir / rel, run_dir / "samples" / rel]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            log.warning("%s: lists %s, which does not exist; left out of the gallery", index, rel)
        files.append(str(found.resolve()) if found else "")
    df["file"] = files
    return df[df["file"] != ""].reset_index(drop=True)


def _run_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def load_runs(paths: Iterable[str | Path]) -> RunData:
    """Load run folders into one :class:`RunData`; raises :class:`RunFolderError` naming the
    file and column when a folder is incomplete or of another schema version."""
    dirs = [Path(p).resolve() for p in paths]
    if not dirs:
        raise RunFolderError("no run folder given")
    tables: dict[str, list[pd.DataFrame]] = {
        k: [] for k in ("stages", "metrics", "predictions", "trials", "samples", "curves")
    }
    configs: dict[str, dict] = {}
    run_dirs: dict[str, Path] = {}
    for name, run_dir in zip(_run_names(dirs), dirs, strict=True):
        if not run_dir.is_dir():
            raise RunFolderError(f"{run_dir}: not a folder; pass a run folder written by umsrep")
        configs[name] = load_config(run_dir)
        run_dirs[name] = run_dir
        parts = {
            "stages": _read_table(run_dir / "stages.parquet", STAGES_COLUMNS),
            "metrics": _read_table(run_dir / "metrics.parquet", METRICS_COLUMNS),
            "predictions": _read_table(run_dir / "predictions.parquet", PREDICTIONS_COLUMNS),
            "trials": load_trials(run_dir),
            "samples": load_samples(run_dir),
            "curves": _read_table(run_dir / "curves.parquet", CURVES_COLUMNS)
            if (run_dir / "curves.parquet").is_file() else _empty(CURVES_COLUMNS),
        }
        for key, df in parts.items():
            tables[key].append(df.assign(run=name))
    merged = {k: _concat(v) for k, v in tables.items()}
    return RunData(**merged, configs=configs, run_dirs=run_dirs)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    non_empty = [f for f in frames if len(f)]
    df = pd.concat(non_empty or frames[:1], ignore_index=True)
    return df[["run", *[c for c in df.columns if c != "run"]]]
