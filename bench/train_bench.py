"""Training throughput: the model's raw step speed vs the same model trained as a real stage.

For the CXR backbone + heads of ``sweeps/cxr_public.yaml`` (CDAE, lung ``seg_cdae`` with skips,
abnormality classification head, joint strategy), at each ``--sizes`` (128 and 256 px):

1. **raw**: images/s of bare training steps (forward + backward + optimizer) on random batches
   held in memory, in fp32, channels_last, bf16 autocast and channels_last + bf16, all threads;
2. **stage**: the same model trained as a real stage on synthetic CXRs of that size
   (``umsrep.data.synthetic``), once through the runner in this process (``umsrep train``'s
   path) and once through Ray Train (a TorchTrainer with one worker given every CPU, as a
   one-stage wave gets), with the experiment's own precision and memory format. Throughput is
   training images / the loop's wall time: steps, validation, checkpoint and the report to
   Ray included (Ray's worker start-up and the final test scoring are printed apart).

``--check`` exits 1 when ``in-stage/raw`` (the Ray stage's rate over the best raw rate, at the
first size) is below ``--target`` (0.6); its last line is ``in-stage/raw <ratio>``.

    python bench/train_bench.py --check                  # ~3 min on a 2-core CPU
    python bench/train_bench.py --sizes 128 --images 256 --epochs 3
    python bench/train_bench.py --smoke-test             # seconds: tiny sizes, code path only

A timing is only meaningful on an otherwise idle machine: the script prints the load average.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (channels_last, precision)
    "fp32": (False, "fp32"),
    "channels_last": (True, "fp32"),
    "bf16": (False, "bf16"),
    "channels_last+bf16": (True, "bf16"),
}


def bench_experiment(size: int, images: int, epochs: int, batch: int, source: Path) -> dict:
    """The scenario file's model and training settings on ``images`` synthetic CXRs."""
    import yaml

    cfg = yaml.safe_load(source.read_text())
    cfg.pop("base", None)
    cfg = {k: v for k, v in cfg.items() if k not in ("search", "paper_reference", "sweeps")}
    cfg["name"] = "train-bench"
    cfg["data"] = {"image_size": size, "fit": cfg.get("data", {}).get("fit", "stretch"),
                   "train": [{"synthetic": "cxr", "n": images, "seed": 0}]}
    cfg["folds"] = {"k": 5, "run": 1, "val_fraction": 0.1, "stratify": "abnormal"}
    cfg["backbone"] = {**cfg["backbone"], "pretrain": "none"}
    cfg["backbone"].pop("train", None)
    cfg["tasks"] = [t for t in cfg["tasks"] if t["name"] in ("lung", "abnormal")]
    joint = [s for s in cfg["strategies"] if s["name"] == "joint"] or [{"name": "joint"}]
    cfg["strategies"] = joint
    cfg["baseline"] = {"enabled": False}
    cfg["train"] = {**cfg["train"], "epochs": epochs, "batch_size": batch, "patience": 0,
                    "plateau_patience": 0}
    cfg["evaluation"] = {}
    cfg["resources"] = {"num_workers": 1, "cpus_per_worker": 1.0, "cpus_per_trial": 0.25}
    return cfg


def raw_throughput(exp, size: int, batch: int, steps: int) -> dict[str, float]:
    """images/s of bare joint steps on the experiment's model, per VARIANTS entry."""
    from umsrep.models import ModelSpec, build_model
    from umsrep.noise import NoiseConfig
    from umsrep.runner.network import backbone_spec
    from umsrep.strategies import build_strategy
    from umsrep.tasks import Task

    tasks = [Task(name=t.name, kind=t.kind, column=t.column if t.kind == "classification" else "",
                  classes=("0", "1") if t.kind == "classification" else None, head=t.head,
                  head_kwargs=dict(t.head_kwargs), loss=t.loss) for t in exp.tasks]
    spec = ModelSpec(backbone=backbone_spec(exp), tasks=tuple(tasks), image_size=size)
    g = torch.Generator().manual_seed(0)

    def make_batch() -> dict:
        return {"image": torch.rand(batch, 1, size, size, generator=g) - 0.5,
                "image_mean": torch.zeros(batch),
                "mask": (torch.rand(batch, 1, size, size, generator=g) > 0.5).float(),
                "has_mask": torch.ones(batch, dtype=torch.bool),
                "labels": {"abnormal": torch.randint(0, 2, (batch,), generator=g)}}

    # one batch per task, as a stage's per-task loaders give the joint strategy (one forward
    # each), and images counted as umsrep.train.loop.run_epoch counts them
    batches = {t.name: make_batch() for t in tasks}
    per_step = batch * len(batches)
    from umsrep.precision import cpu_has_native_bf16

    out = {}
    for name, (cl, precision) in VARIANTS.items():
        # emulated bf16 runs at a few images/s: two steps say enough about it
        n_steps = steps if precision != "bf16" or cpu_has_native_bf16() else min(steps, 2)
        torch.manual_seed(0)
        model = build_model(spec)  # as a stage builds it (umsrep.runner.network)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opts = dict(exp.strategies[0].options)
        strat = build_strategy("joint", model, tasks, lr=1e-3, precision=precision,
                               noise_cfg=NoiseConfig(), **opts)
        strat.channels_last = cl
        strat.train_mode()
        strat.step(batches)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n_steps):
            strat.step(batches)
        out[name] = per_step * n_steps / (time.perf_counter() - t0)
    return out


def stage_rate(result: dict) -> dict[str, float]:
    """Throughput and overhead of one stage from its result.json."""
    hist_images = result["train_images"]
    steps_s = sum(result["epoch_s"])
    return {"rate": hist_images / result["wall_s"], "steps_rate": hist_images / steps_s,
            "overhead": 1.0 - steps_s / result["wall_s"], "wall_s": result["wall_s"],
            "total_s": result.get("total_s", float("nan")), "epochs": result["epochs"],
            "images": hist_images}


def plain_stage(run) -> dict[str, float]:
    from umsrep.runner.stage import run_stage

    torch.set_num_threads(os.cpu_count() or 1)
    stage = run.plan.by_id()["f0-joint"]
    return stage_rate(run_stage(run.ctx, stage, out_dir=run.run_dir / "plain"))


def ray_stage(run, exp, threads: int) -> tuple[dict[str, float], float]:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from sweeps.worker import train_loop_per_worker

    stage = run.plan.by_id()["f0-joint"]
    out = run.run_dir / "ray"
    t0 = time.perf_counter()
    TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": exp.to_dict(), "run_dir": str(run.run_dir),
                           "store_dir": str(run.ctx.store_dir),
                           "stage": dataclasses.asdict(stage), "hparams": {},
                           "out_dir": str(out), "use_gpu": False, "threads": threads},
        scaling_config=ray.train.ScalingConfig(num_workers=1,
                                               resources_per_worker={"CPU": threads}),
        run_config=ray.train.RunConfig(name=f"bench-{time.time_ns()}",
                                       storage_path=str(run.run_dir / "rt")),
    ).fit()
    total = time.perf_counter() - t0
    result = json.loads((out / "result.json").read_text())
    return stage_rate(result), total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--images", type=int, nargs="+", default=[320, 96],
                   help="synthetic training images per size (same order as --sizes)")
    p.add_argument("--epochs", type=int, default=10,
                   help="a stage's epochs (cxr_public's stages stop after 20-40): fewer measure "
                        "mostly the start of a worker")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6, help="timed raw steps per variant")
    p.add_argument("--experiment", type=Path, default=ROOT / "sweeps" / "cxr_public.yaml")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray Train stage")
    p.add_argument("--check", action="store_true", help="exit 1 below --target")
    p.add_argument("--target", type=float, default=0.6)
    p.add_argument("--settle", type=float, default=8.0,
                   help="seconds to wait after starting Ray, before anything is timed")
    p.add_argument("--smoke-test", action="store_true", help="32 px, 24 images, 1 epoch")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.sizes, args.images, args.epochs, args.steps, args.batch = [32], [24], 2, 1, 4
        args.settle = 0.0
    if not args.experiment.exists():
        args.experiment = ROOT / "sweeps" / "cxr_real_small.yaml"
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    from umsrep.experiment import load_experiment
    from umsrep.precision import cpu_has_native_bf16
    from umsrep.runner.local import prepare_run

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(f"cpu threads {threads}, native bf16 {cpu_has_native_bf16()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, model from {args.experiment.name}")
    ratios = []
    if not args.no_ray:
        # Started first and left to settle: Ray prestarts one Python worker per CPU, which
        # import for a few seconds (at nice 15) and would otherwise land in the first stage's
        # first epoch, as they land only once at the start of a sweep.
        import ray

        ray.init(address="local", num_cpus=threads, configure_logging=False,
                 log_to_driver=False, include_dashboard=False)
        time.sleep(args.settle)
    for size, n in zip(args.sizes, args.images + args.images[-1:] * len(args.sizes), strict=False):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = bench_experiment(size, n, args.epochs, args.batch, args.experiment)
            cfg["data"]["cache_dir"] = str(Path(tmp) / "cache")
            exp = load_experiment(data=copy.deepcopy(cfg), check_paths=False)
            raw = raw_throughput(exp, size, args.batch, args.steps)
            best = max(raw, key=raw.get)
            print(f"\n{size} px raw steps (batch {args.batch}): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in raw.items())
                  + f" images/s; best {best}; the stage uses precision "
                  f"{exp.train.precision}, channels_last {exp.train.channels_last}")
            run = prepare_run(exp, Path(tmp) / "runs")
            plain = plain_stage(run)
            print(f"{size} px stage, runner : {plain['rate']:.1f} images/s of loop wall "
                  f"({plain['steps_rate']:.1f} in the steps; validation + checkpoint "
                  f"{plain['overhead']:.0%} of the loop), {plain['epochs']} epochs of "
                  f"{plain['images'] // max(plain['epochs'], 1)} images, stage total "
                  f"{plain['total_s']:.1f} s")
            ratio_plain = plain["rate"] / raw[best]
            if not args.no_ray:
                rs, total = ray_stage(run, exp, threads)
                print(f"{size} px stage, Ray    : {rs['rate']:.1f} images/s of loop wall "
                      f"({rs['steps_rate']:.1f} in the steps; validation + checkpoint + "
                      f"report {rs['overhead']:.0%}), TorchTrainer total {total:.1f} s "
                      f"(start-up and test scoring {total - rs['wall_s']:.1f} s)")
                ratios.append(rs["rate"] / raw[best])
            else:
                ratios.append(ratio_plain)
            print(f"{size} px in-stage/raw: runner {ratio_plain:.2f}, "
                  f"{'Ray ' + format(ratios[-1], '.2f') if not args.no_ray else ''}")
    print(f"in-stage/raw {ratios[0]:.2f}")
    return 1 if args.check and ratios[0] < args.target else 0


if __name__ == "__main__":
    sys.exit(main())
