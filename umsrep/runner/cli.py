"""``umsrep train CONFIG.yaml``: one experiment, single process, stage by stage (no Ray)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from umsrep.config import output_folder, parse_set_options
from umsrep.experiment import load_experiment
from umsrep.runner.resume import check_resumable


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="experiment YAML (see sweeps/)")
    p.add_argument("--data-root", type=Path, default=None, help="overrides data.root")
    p.add_argument("--output", type=output_folder, default=Path("runs"),
                   help="where run folders go (a local or mounted folder)")
    p.add_argument("--resume", type=Path, default=None, help="finish this run folder")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--folds", type=int, default=None, help="run only the first N folds")
    p.add_argument("--set", dest="set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one experiment setting (repeatable), e.g. --set data.fit=pad")


def ignored_settings(exp) -> list[str]:
    """What ``umsrep train`` (one process, no Ray) does not do of what ``exp`` asks, said
    before it starts rather than found missing after."""
    lines = []
    if exp.search.num_samples > 0:
        lines.append(f"search.num_samples is {exp.search.num_samples}, but only `umsrep sweep` "
                     "searches: every stage trains with the settings as given in the file")
    if exp.tracking.mlflow:
        lines.append(f"tracking.mlflow ({exp.tracking.mlflow}) is used by `umsrep sweep` and "
                     "`umsrep demo` only: nothing is logged to MLflow")
    return lines


def _cuda() -> bool:
    import torch  # lazy: torch off `umsrep --help` and the config check

    return torch.cuda.is_available()


def run(args: argparse.Namespace) -> int:
    overrides = {"folds.run": args.folds} if args.folds else {}
    overrides |= parse_set_options(args.set)  # the user's --set wins
    exp = load_experiment(args.config, data_root=args.data_root, overrides=overrides)
    if args.resume is not None:
        check_resumable(args.resume)
    for line in ignored_settings(exp):
        print(f"umsrep train: {line}", file=sys.stderr)
    # torch and the runner only once the experiment is valid: a bad file is refused in a second
    # lazy: torch off `umsrep --help` and the config check
    from umsrep.runner.local import run_local

    device = args.device or ("cuda" if _cuda() else "cpu")
    run_dir = run_local(exp, args.output, resume=args.resume, device=device)
    print(run_dir)
    return 0
