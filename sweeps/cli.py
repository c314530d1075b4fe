"""``umsrep sweep X.yaml``: an experiment through Ray Train + Tune, locally or on a cluster."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sweeps.tracking import require_mlflow
from umsrep.config import output_folder, parse_set_options
from umsrep.experiment import load_experiment, read_experiment_file
from umsrep.runner.resume import check_resumable

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="experiment YAML (see sweeps/)")
    p.add_argument("--data-root", type=Path, default=None, help="overrides data.root")
    p.add_argument("--output", type=output_folder, default=Path("runs"),
                   help="where run folders go (default runs/; shared storage on a cluster)")
    p.add_argument("--resume", type=Path, default=None,
                   help="finish an interrupted run folder without redoing finished work")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    p.add_argument("--smoke-test", action="store_true",
                   help="2 folds, 1 epoch, a 2-trial search: checks the whole path quickly")
    p.add_argument("--gpus", type=int, default=None, help="GPUs per machine to use (local)")
    p.add_argument("--num-workers", type=int, default=None, help="Ray Train workers per stage")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    add_mlflow_argument(p)
    p.add_argument("--set", dest="set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one experiment setting (repeatable), e.g. "
                        "--set search.num_samples=8 --set folds.k=5")


def add_mlflow_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mlflow", metavar="URI", default=None,
                   help="log every stage and sweep trial to MLflow at this tracking URI, e.g. "
                        "file:./mlruns (sets tracking.mlflow; needs pip install -e \".[tracking]\")")


def smoke_overrides(exp_folds_k: int) -> dict:
    return {"folds.k": max(2, min(exp_folds_k, 3)), "folds.run": 2, "train.epochs": 1,
            "train.max_steps_per_epoch": 2, "backbone.train.epochs": 1,
            "backbone.train.max_steps_per_epoch": 2}


def run(args: argparse.Namespace) -> int:
    overrides: dict = {}
    if args.smoke_test:
        raw = read_experiment_file(args.config)  # with its base: file, as load_experiment reads it
        overrides |= smoke_overrides(int((raw.get("folds") or {}).get("k", 10)))
        if (raw.get("search") or {}).get("num_samples"):
            overrides["search.num_samples"] = 2
    if args.gpus:
        overrides |= {"resources.use_gpu": True}
    if args.num_workers:
        overrides["resources.num_workers"] = args.num_workers
    if args.mlflow:
        overrides["tracking.mlflow"] = args.mlflow
    overrides |= parse_set_options(args.set)  # the user's --set wins
    exp = load_experiment(args.config, data_root=args.data_root, overrides=overrides)
    require_mlflow(exp.tracking.mlflow)
    if args.resume is not None:
        check_resumable(args.resume)
    from sweeps.driver import run_experiment  # lazy: Ray, once the experiment is checked

    run_dir = run_experiment(exp, output=args.output, resume=args.resume, address=args.address,
                             num_gpus=args.gpus, report=not args.no_report)
    print(run_dir)
    return 0
