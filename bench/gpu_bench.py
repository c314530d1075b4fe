"""GPU throughput and peak memory of the cxr_heterogeneous paper-settings models, AMP vs fp32.

Reads ``sweeps/cxr_heterogeneous.yaml`` for the models and settings (issue 6 item 6) and trains,
on synthetic CXRs (``umsrep.data.synthetic``, 256x256 by default) held in GPU memory so the
loader is not what is measured:

- ``pretrain``: the CDAE (``cdae`` + ``denoise`` head) on Gaussian/Poisson-noised images, with
  the backbone's optimizer (RMSprop 1e-3) and batch size;
- ``independent`` / ``alternating`` / ``joint``: the lung segmentation and abnormality
  classification heads on the CDAE, with the head optimizer (Adam 1e-3) and batch size,

each for a fixed number of steps through ``umsrep.strategies``, in three precisions side by side
in one run: ``fp32`` (no autocast), ``amp-fp16`` (float16 autocast + GradScaler) and ``amp-bf16``
(bfloat16 autocast, no scaler): the ``train.precision`` values fp32 / fp16 / bf16 of
``umsrep/precision.py``, with channels_last. It prints
images/s (images consumed per second after warm-up steps, timed with CUDA synchronization) and
peak GPU memory (``torch.cuda.max_memory_allocated`` from model build to the last step; it
includes the few MiB of resident synthetic batches), with ratios to fp32. Without a CUDA GPU it says so and exits 0.

Run: ``python bench/gpu_bench.py [--steps 40] [--size 256]``; ``--cpu-smoke`` runs 2 steps of
every stage on the CPU at 64 px to check the code path (fp16 falls back to fp32 on a CPU;
bf16 runs as CPU autocast).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from umsrep.data.synthetic import generate
from umsrep.experiment import Experiment, load_experiment
from umsrep.models import ModelSpec, MultiTaskModel, build_model
from umsrep.models.multitask import count_trainable_params
from umsrep.models.spec import DENOISE
from umsrep.noise import NoiseConfig
from umsrep.runner.network import backbone_spec
from umsrep.strategies import build_strategy
from umsrep.tasks import Task
from umsrep.train.loop import run_epoch

EXPERIMENT = Path(__file__).resolve().parents[1] / "sweeps" / "cxr_heterogeneous.yaml"
STAGES = ("pretrain", "independent", "alternating", "joint")
MODES = {"fp32": "fp32", "amp-fp16": "fp16", "amp-bf16": "bf16"}  # train.precision values


@dataclass(frozen=True)
class Measurement:
    stage: str
    mode: str
    images_per_s: float
    peak_mib: float  # nan on the CPU
    params: int
    loss: float


def make_batches(n_batches: int, batch_size: int, size: int, device: torch.device) -> list[dict]:
    """Synthetic CXR batches shaped like ``CachedDataset``'s, already on ``device``.

    image ``[B, 1, size, size]`` per-image mean-centred on the 0-1 scale, image_mean ``[B]``,
    mask ``[B, 1, size, size]`` {0, 1}, has_mask ``[B]``, labels ``{"abnormal": [B] int64}``.
    """
    data = generate("cxr", n_batches * batch_size, size=size, seed=0)
    pixels = torch.from_numpy(data.images).float().div_(255.0).unsqueeze(1)
    means = pixels.mean(dim=(1, 2, 3))
    masks = torch.from_numpy(data.masks).float().unsqueeze(1)
    labels = torch.from_numpy(data.labels["abnormal"].to_numpy(dtype="int64"))
    batches = []
    for i in range(n_batches):
        s = slice(i * batch_size, (i + 1) * batch_size)
        batches.append(
            {
                "image": (pixels[s] - means[s].view(-1, 1, 1, 1)).to(device),
                "image_mean": means[s].to(device),
                "mask": masks[s].to(device),
                "has_mask": torch.ones(batch_size, dtype=torch.bool, device=device),
                "labels": {"abnormal": labels[s].to(device)},
                "sample_id": [str(j) for j in range(s.start, s.stop)],
            }
        )
    return batches


def scenario_tasks(exp: Experiment) -> list[Task]:
    """The experiment's target tasks; the Shenzhen 0/1 ``abnormal`` labels as classes."""
    return [replace(t, classes=("0", "1")) if t.kind == "classification" and t.classes is None
            else t for t in exp.tasks]


def build_bench_model(exp: Experiment, stage: str,
                      tasks: list[Task]) -> tuple[MultiTaskModel, list[Task]]:
    """The stage's network as umsrep builds it (``ModelSpec`` -> ``build_model``): the
    pretraining denoiser, or the backbone with every task's head."""
    tasks = [DENOISE] if stage == "pretrain" else tasks
    spec = ModelSpec(backbone=backbone_spec(exp), tasks=tuple(tasks),
                     image_size=exp.data.image_size)
    return build_model(spec), tasks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    exp: Experiment,
    stage: str,
    mode: str,
    batches: list[dict],
    steps: int,
    warmup: int,
    device: torch.device,
) -> Measurement:
    """Build a fresh model, ``warmup`` untimed steps, then ``steps`` timed steps."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(exp.seed)
    model, tasks = build_bench_model(exp, stage, scenario_tasks(exp))
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    settings = exp.backbone.train if stage == "pretrain" else exp.train
    options = dict(next((s.options for s in exp.strategies if s.name == stage), {}))
    n = exp.backbone.noise
    noise = NoiseConfig(kinds=tuple(n.kinds), sigmas=tuple(n.sigmas), per_image=n.per_image)
    strategy = build_strategy(
        "joint" if stage == "pretrain" else stage,
        model,
        tasks,
        optimizer=settings.optimizer,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        noise_cfg=noise,
        device=device,
        precision=MODES[mode],
        noise_seed=exp.seed,
        **options,
    )
    loaders = {t.name: batches for t in tasks}  # one shared batch stream, as one dataset
    run_epoch(strategy, loaders, max_steps=warmup)
    sync(device)
    start = time.perf_counter()
    logs = run_epoch(strategy, loaders, max_steps=steps)
    sync(device)
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    )
    loss = float(logs["train/loss"])
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f"{stage} / {mode}: the training loss is {loss}; the step diverged")
    return Measurement(
        stage, mode, logs["train/images"] / seconds, peak, count_trainable_params(model), loss
    )


def print_table(rows: list[Measurement]) -> None:
    fp32 = {r.stage: r for r in rows if r.mode == "fp32"}
    print(
        f"{'stage':<12} {'mode':<9} {'images/s':>9} {'x fp32':>7} {'peak MiB':>9} "
        f"{'x fp32':>7} {'trainable':>10} {'loss':>8}"
    )
    for r in rows:
        base = fp32[r.stage]
        print(
            f"{r.stage:<12} {r.mode:<9} {r.images_per_s:9.1f} "
            f"{r.images_per_s / base.images_per_s:7.2f} {r.peak_mib:9.0f} "
            f"{r.peak_mib / base.peak_mib:7.2f} {r.params:>10,} {r.loss:8.4f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", type=Path, default=EXPERIMENT)
    p.add_argument("--size", type=int, default=None, help="image side (default: the YAML's)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="2 steps per stage on the CPU at 64 px: checks the code path",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exp = load_experiment(args.experiment, check_paths=False)
    if args.cpu_smoke:
        device, size, steps, warmup = torch.device("cpu"), 64, 2, 1
        print(
            "CPU smoke test: 2 steps per stage at 64 px; AMP is CUDA-only, so every mode "
            "runs fp32 here and the peak GPU memory is n/a"
        )
    elif not torch.cuda.is_available():
        print(
            "No CUDA GPU available: gpu_bench measures CUDA throughput and memory, so there is "
            "nothing to measure here. Run it on a GPU machine, or use --cpu-smoke to check "
            "the code path on the CPU."
        )
        return 0
    else:
        device = torch.device("cuda")
        size, steps, warmup = args.size or exp.data.image_size, args.steps, args.warmup
        torch.backends.cudnn.benchmark = True
        print(
            f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
            f"{size}x{size} px, {steps} timed steps after {warmup} warm-up steps"
        )
    print(
        f"experiment {args.experiment.name}: backbone {exp.backbone.name} ({exp.backbone.preset})"
        f", tasks {', '.join(t.name + ':' + t.head for t in exp.tasks)}, batch "
        f"{exp.backbone.train.batch_size} (pretrain) / {exp.train.batch_size} (heads)"
    )
    rows = []
    by_batch_size: dict[int, list[dict]] = {}
    for stage in args.stages:
        bs = (exp.backbone.train if stage == "pretrain" else exp.train).batch_size
        if bs not in by_batch_size:
            by_batch_size[bs] = make_batches(4, bs, size, device)
        for mode in MODES:
            rows.append(measure(exp, stage, mode, by_batch_size[bs], steps, warmup, device))
            r = rows[-1]
            print(
                f"  {stage} / {mode}: {r.images_per_s:.1f} images/s, peak {r.peak_mib:.0f} MiB",
                flush=True,
            )
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
