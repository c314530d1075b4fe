"""Ray overhead: epoch time of one stage under a TorchTrainer (one worker) vs the plain loop,
measured side by side on the same model and data; plus a demo run's time split by stage and
the shared-vs-baseline cost (the shape of the paper's Table 4).

    python bench/ray_overhead.py [--size 64] [--epochs 4] [--poll 2.0,0.2] [--demo-run runs/...]

Two epoch times per run: ``train`` (the training steps only) and ``wall`` (stage wall time /
epochs: steps, validation, checkpoint and the report to Ray). Ray runs once per ``--poll``
value of RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray's default is 2.0 s; umsrep sets 0.1 s).
Prints figures; it is not a test. Target: TorchTrainer epoch time <= 1.05x the plain loop.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXPERIMENT = {
    "name": "overhead", "seed": 0,
    "data": {"image_size": 64, "train": [{"synthetic": "cxr", "n": 160, "seed": 0}]},
    "folds": {"k": 2, "run": 1, "val_fraction": 0.15, "stratify": "abnormal"},
    "backbone": {"name": "cdae", "preset": "tiny", "pretrain": "none"},
    "tasks": [
        {"name": "lung", "kind": "segmentation", "column": "mask", "head": "seg_cdae",
         "head_kwargs": {"skips": True}, "loss": "bce_dice"},
        {"name": "abnormal", "kind": "classification", "column": "abnormal"},
    ],
    "strategies": [{"name": "joint"}],
    "baseline": {"enabled": False},
    "train": {"epochs": 4, "batch_size": 16, "patience": 0, "plateau_patience": 0},
    "resources": {"num_workers": 1, "cpus_per_worker": 1.0, "cpus_per_trial": 0.25},
}


def steady(epoch_s: list[float]) -> float:
    """Median epoch time without the first (warm-up) epoch."""
    return statistics.median(epoch_s[1:] if len(epoch_s) > 1 else epoch_s)


def plain(run) -> tuple[float, float]:
    import torch

    from umsrep.runner.stage import run_stage

    torch.set_num_threads(1)
    stage = run.plan.by_id()["f0-joint"]
    t0 = time.perf_counter()
    result = run_stage(run.ctx, stage, out_dir=run.run_dir / "plain")
    return _epoch_times(result), time.perf_counter() - t0


def _epoch_times(result: dict) -> tuple[float, float]:
    """(steady train-step time per epoch, wall time per epoch) of a stage's result.json."""
    return steady(result["epoch_s"]), result["wall_s"] / max(result["epochs"], 1)


def under_ray(run, exp, poll: str) -> tuple[tuple[float, float], float]:
    import dataclasses

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from sweeps.worker import train_loop_per_worker

    ray.init(address="local", num_cpus=2, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0",
                                       "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": poll}})
    stage = run.plan.by_id()["f0-joint"]
    out = run.run_dir / f"ray-{poll}"
    t0 = time.perf_counter()
    TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": exp.to_dict(), "run_dir": str(run.run_dir),
                           "store_dir": str(run.ctx.store_dir),
                           "stage": dataclasses.asdict(stage), "hparams": {},
                           "out_dir": str(out), "use_gpu": False, "threads": 1},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"overhead-{poll}",
                                       storage_path=str(run.run_dir / "rt")),
    ).fit()
    total = time.perf_counter() - t0
    ray.shutdown()
    result = json.loads((out / "result.json").read_text())
    return _epoch_times(result), total


def demo_split(run_dir: Path) -> None:
    import pandas as pd

    from analysis.cost import cost_summary

    stages = pd.read_parquet(run_dir / "stages.parquet")
    print(f"\ndemo run {run_dir.name}: training time by stage (s)")
    for _, r in stages.iterrows():
        name = f"f{r.fold} {r.kind:8s} {r.strategy or '-':11s} {r.task or '(all)':9s}"
        print(f"  {name} {r.wall_s:7.1f} s  {r.epochs:3d} epochs  {r.trainable_params:>9,} params")
    print("\nshared approach vs baseline (paper Table 4 shape):")
    print(cost_summary(stages.assign(run=run_dir.name)).T.to_string())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--poll", default="2.0,0.1",
                   help="RAY_TRAIN_HEALTH_CHECK_INTERVAL_S values to compare (comma separated)")
    p.add_argument("--demo-run", type=Path, default=None, help="a finished demo run folder")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    from umsrep.experiment import load_experiment
    from umsrep.runner.local import prepare_run

    cfg = copy.deepcopy(EXPERIMENT)
    cfg["data"]["image_size"] = args.size
    cfg["train"]["epochs"] = args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        cfg["data"]["cache_dir"] = str(Path(tmp) / "cache")
        exp = load_experiment(data=cfg)
        run = prepare_run(exp, Path(tmp) / "runs")
        (plain_train, plain_wall), plain_total = plain(run)
        rays = {poll: under_ray(run, exp, poll) for poll in args.poll.split(",")}
    print(f"\none stage (joint, lung + abnormal, {args.size} px, {args.epochs} epochs, 1 worker)")
    print(f"  plain loop        : train {plain_train:5.2f} s/epoch, wall {plain_wall:5.2f} s/epoch"
          f"   stage total {plain_total:6.1f} s")
    for poll, ((train, wall), total) in rays.items():
        print(f"  TorchTrainer {poll:>4s}s: train {train:5.2f} s/epoch, wall {wall:5.2f} s/epoch"
              f"   stage total {total:6.1f} s (includes worker start-up)")
        print(f"      wall-per-epoch ratio Ray/plain = {wall / plain_wall:.3f} (target <= 1.05); "
              f"fixed start-up {total - plain_total:.1f} s")
    if args.demo_run:
        demo_split(args.demo_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
