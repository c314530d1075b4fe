"""Is a folder given to ``--resume`` a run folder that can be resumed? Checked by the commands
before Ray or torch is imported, so a mistyped path costs a second (a cheap check: the files
``prepare_run`` reads first are there and ``config.yaml`` is a YAML mapping)."""

from __future__ import annotations

from pathlib import Path

import yaml

from umsrep.config import UserError

# what prepare_run(resume=...) reads before anything else (runfolder.py, data.py)
RESUME_FILES = ("config.yaml", "data.json", "data.npz")


def check_resumable(run_dir: Path) -> Path:
    """``run_dir`` if it can be resumed, else a ``UserError`` naming it and what is wrong."""

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: --resume needs an existing run folder (one that umsrep "
                        "train or umsrep sweep wrote); this is not a folder")
    missing = [name for name in RESUME_FILES if not (run_dir / name).is_file()]
    if missing:
        raise UserError(f"{run_dir}: not a run folder that can be resumed ({', '.join(missing)} "
                        "missing); start a new run instead")
    config = run_dir / "config.yaml"
    try:
        data = yaml.safe_load(config.read_text())
    except OSError as exc:
        raise UserError(f"{config}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{config}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or not isinstance(data.get("experiment"), dict):
        raise UserError(f"{config}: has no experiment section; is {run_dir} a umsrep run folder?")
    return run_dir
