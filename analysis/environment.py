"""The report's "Environment" section: the versions that produced each run, read from the run
folder's ``environment.json`` (and ``environment-resume-*.json`` when a resume ran with other
versions; written by ``umsrep/runner/environment.py``). JSON only: no torch here."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import pandas as pd

from analysis import _html
from analysis.load import RunData

log = logging.getLogger(__name__)

FILE = "environment.json"
# the rows of the summary table: label -> how to read it from environment.json
_SUMMARY = {
    "python": lambda e: e.get("python"),
    "umsrep": lambda e: _revision(e.get("umsrep") or {}),
    "torch": lambda e: e.get("torch"),
    "torch CUDA build": lambda e: e.get("torch_cuda") or "none (CPU build)",
    "ray": lambda e: e.get("ray"),
    "platform": lambda e: e.get("platform"),
    "against constraints.txt": lambda e: _lock_status(e),
    "recorded at": lambda e: e.get("recorded_at"),
}


def _revision(info: dict) -> str | None:
    if info.get("describe") or info.get("commit"):
        return f"{info.get('describe') or info['commit'][:12]} ({info.get('version')})"
    return info.get("version")


def _lock_status(env: dict) -> str:
    diff = env.get("lock_differences")
    if diff is None:
        return "not checked (not run from a checkout)"
    return "matches" if not diff else f"{len(diff)} package(s) differ"


def read_environments(run_dir: Path) -> dict[str, dict]:
    """``environment.json`` (label "") and any ``environment-resume-<time>.json`` (label
    "resumed <time>") of one run folder; unreadable files are skipped with a warning."""
    out = {}
    files = [run_dir / FILE, *sorted(run_dir.glob("environment-resume-*.json"))]
    for path in files:
        if not path.is_file():
            continue
        try:
            out["" if path.name == FILE else f"resumed {path.stem[19:]}"] = json.loads(
                path.read_text()
            )
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot be read (%s); left out of the report", path, exc)
    return out


def environment_tables(data: RunData) -> dict[str, pd.DataFrame]:
    """``environment`` (one row per summary item, one column per run and resume),
    ``packages`` (every installed package's version, same columns) and ``lock_differences``
    (run, package, lock, installed). Empty frames when no run recorded its environment."""
    summary, packages, diffs = {}, {}, []
    for run in data.runs:
        run_dir = data.run_dirs.get(run)
        envs = read_environments(run_dir) if run_dir is not None else {}
        for label, env in envs.items():
            col = f"{run} ({label})" if label else run
            summary[col] = {k: f(env) for k, f in _SUMMARY.items()}
            packages[col] = env.get("packages") or {}
            for name, d in (env.get("lock_differences") or {}).items():
                diffs.append({"run": col, "package": name, **d})
    env_df = pd.DataFrame(summary, index=list(_SUMMARY)).rename_axis("item").reset_index()
    pkg_df = pd.DataFrame(packages).rename_axis("package").reset_index()
    if len(pkg_df):
        pkg_df = pkg_df.sort_values("package", key=lambda s: s.str.lower(), ignore_index=True)
    diff_df = pd.DataFrame(diffs, columns=["run", "package", "lock", "installed"])
    return {
        "environment": env_df if summary else pd.DataFrame(),
        "packages": pkg_df,
        "lock_differences": diff_df,
    }


def environment_section(data: RunData) -> str:
    """The HTML of the section: the summary table, lock differences, every package."""
    t = environment_tables(data)
    missing = [r for r in data.runs if r not in t["environment"].columns]
    parts = []
    if len(t["environment"]):
        parts.append(
            _html.table(t["environment"], "environment", "Versions that produced each run")
        )
    if missing:
        parts.append(
            _html.paragraph(
                "No environment.json in "
                + ", ".join(html.escape(r) for r in missing)
                + " (written by umsrep releases that record their environment)."
            )
        )
    if len(t["lock_differences"]):
        parts.append(
            _html.table(
                t["lock_differences"],
                "lock_differences",
                "Packages installed at another version than constraints.txt pins",
            )
        )
    if len(t["packages"]):
        parts.append(
            _html.table(
                t["packages"],
                "packages",
                "Every installed package (importlib.metadata)",
                collapsed=True,
            )
        )
    return "".join(parts)
