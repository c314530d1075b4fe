"""The versions that produced a run: ``environment.json`` in the run folder.

Written when the run folder is created (and, on ``--resume``, again beside it when the
versions changed). ``umsrep report`` shows it (``analysis/environment.py``). Keys:

``python`` (version), ``implementation``, ``platform``, ``umsrep`` (``version``, and from git
when the package runs from a checkout: ``commit``, ``describe``, ``dirty``), ``torch``
(``torch.__version__``, build suffix included, e.g. ``2.14.1+cu130``), ``torch_cuda`` (the CUDA
torch was built for, or null), ``ray``, ``packages`` (every installed distribution: name ->
version, from :mod:`importlib.metadata`; in an install from ``constraints.txt`` these are the
lock's packages), ``lock_differences`` (only when the package runs from a checkout holding
``constraints.txt``: name -> {"lock", "installed"} for each pinned package installed at another
version or not at all; empty when the install matches the lock) and ``recorded_at`` (UTC).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import platform
import re
import subprocess
from pathlib import Path

from umsrep.runner.store import atomic_write_json

FILE = "environment.json"
_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when umsrep runs from one


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=_ROOT,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def umsrep_revision() -> dict:
    """The package version, and the git commit/describe when umsrep runs from a checkout."""
    try:
        version = md.version("umsrep")
    except md.PackageNotFoundError:
        version = None
    info: dict = {"version": version}
    if (_ROOT / ".git").exists() and (_ROOT / "umsrep").is_dir():
        commit = _git("rev-parse", "HEAD")
        if commit:
            info["commit"] = commit
            info["describe"] = _git("describe", "--always", "--dirty", "--tags")
            info["dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return info


def installed_packages() -> dict[str, str]:
    """Every installed distribution, name -> version (the first found on ``sys.path`` wins,
    as for imports)."""
    out: dict[str, str] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name and _norm(name) not in {_norm(n) for n in out}:
            out[name] = dist.version
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def read_lock(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by normalized name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9._-]+)\s*==\s*([^\s;]+)", line)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def lock_differences(packages: dict[str, str], lock: dict[str, str]) -> dict[str, dict]:
    installed = {_norm(k): v for k, v in packages.items()}
    return {name: {"lock": want, "installed": installed.get(name)}
            for name, want in sorted(lock.items()) if installed.get(name) != want}


def capture() -> dict:
    """The versions of this process's environment (see the module docstring)."""
    import torch  # lazy: reading a run folder needs no torch

    packages = installed_packages()
    env = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "umsrep": umsrep_revision(),
        "torch": str(torch.__version__),
        "torch_cuda": torch.version.cuda,
        "ray": _version("ray"),
        "packages": packages,
    }
    lock = _ROOT / "constraints.txt"
    if lock.is_file() and (_ROOT / "umsrep").is_dir():
        env["lock_differences"] = lock_differences(packages, read_lock(lock))
    env["recorded_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return env


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def write_environment(run_dir: Path) -> Path:
    """Write ``environment.json`` into a new run folder; on a resumed one whose environment
    differs (other than the time), write ``environment-resume-<UTC time>.json`` beside it.
    Returns the file written, or the existing one when nothing changed."""

    run_dir = Path(run_dir)
    env = capture()
    path = run_dir / FILE
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError):
            before = None
        same = before is not None and {k: v for k, v in before.items() if k != "recorded_at"} \
            == {k: v for k, v in env.items() if k != "recorded_at"}
        if same:
            return path
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = run_dir / f"environment-resume-{stamp}.json"
    atomic_write_json(env, path)
    return path

