"""``umsrep demo``: the synthetic CXR experiment end to end on the CPU, then its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from sweeps.cli import add_mlflow_argument
from sweeps.tracking import require_mlflow
from umsrep.config import output_folder
from umsrep.experiment import load_experiment
from umsrep.runner.resume import check_resumable

DEMO = Path(__file__).resolve().parent / "demo.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpus", type=int, default=None, help="use N local GPUs (trials share them)")
    p.add_argument("--output", type=output_folder, default=Path("runs"), help="where the run folder goes")
    p.add_argument("--resume", type=Path, default=None, help="finish an interrupted demo run")
    add_mlflow_argument(p)


def run(args: argparse.Namespace) -> int:
    overrides = {}
    if args.gpus:
        overrides = {"resources.use_gpu": True, "resources.gpus_per_worker": 0.5,
                     "resources.cpus_per_worker": 1.0}
    if args.mlflow:
        overrides["tracking.mlflow"] = args.mlflow
    exp = load_experiment(DEMO, overrides=overrides)
    require_mlflow(exp.tracking.mlflow)
    if args.resume is not None:
        check_resumable(args.resume)
    from sweeps.driver import run_experiment  # lazy: Ray, once the experiment is checked

    run_dir = run_experiment(exp, output=args.output, resume=args.resume, num_gpus=args.gpus)
    report = run_dir / "report.html"
    print(f"demo finished: run folder {run_dir}")
    if report.exists():
        print(f"report: {report}")
    return 0
