"""Training throughput of the shared approach vs the separate-model baseline (issue 3).

CXR heterogeneous scenario on random 0-1 images: a ``cdae`` backbone with a ``seg_cdae`` lung
head and a ``classification`` abnormality head.

1. images/s of backbone + heads under each strategy (independent, alternating, joint with fixed
   and with GradNorm weights) at each size (64 and 256 px by default);
2. trainable parameters and time per epoch (same number of images) of the shared approach
   (denoising backbone trained once + heads under the independent strategy) vs the baseline
   (a separate denoiser + a separate segmentation model + a separate classifier, each trained
   from scratch; the task models read the denoiser's output, paper Figure 4), as ratios from
   this one run.

images/s counts distinct images consumed per second: under ``alternating`` each step trains
one task on its batch, under the others every task sees every batch.

Run: ``python bench/train_bench.py`` (a few minutes on 2 CPU cores), ``--smoke-test`` for a
seconds-long check. Timings exclude one warm-up step per measurement.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset

from umsrep.models import MultiTaskModel, build_backbone, build_head, build_separate_model
from umsrep.models.multitask import count_trainable_params
from umsrep.noise import NoiseConfig
from umsrep.strategies import DenoisedInput, build_strategy
from umsrep.tasks import Task
from umsrep.train.loop import run_epoch

SEG = Task(name="lung", kind="segmentation", head="seg_cdae")
CLS = Task(name="abnormal", kind="classification", column="abnormal", classes=("no", "yes"))
DEN = Task(name="denoise", kind="denoise")
NOISE = NoiseConfig()
STRATEGIES = {
    "independent": {},
    "alternating": {},
    "joint-fixed": {"weighting": "fixed"},
    "joint-gradnorm": {"weighting": "gradnorm"},
}


class RandomCxr(Dataset):
    """``n`` random items shaped like ``CachedDataset``'s (mask and label on every item)."""

    def __init__(self, n: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, size, size, generator=g)
        self.masks = (torch.rand(n, 1, size, size, generator=g) > 0.5).float()
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        mean = self.images[i].mean()
        return {
            "image": self.images[i] - mean,
            "image_mean": mean,
            "mask": self.masks[i],
            "has_mask": torch.tensor(True),
            "labels": {"abnormal": self.labels[i]},
            "sample_id": str(i),
        }


def shared_model(preset: str) -> MultiTaskModel:
    backbone = build_backbone("cdae", preset=preset)
    heads = {
        t.name: build_head(t.head, backbone, num_classes=t.num_classes, preset=preset)
        for t in (SEG, CLS)
    }
    return MultiTaskModel(backbone, heads)


def timed_epoch(model, tasks, strategy: str, loaders, steps: int, **options) -> tuple[float, int]:
    """(seconds, images) of ``steps`` training steps after one warm-up step."""
    strat = build_strategy(strategy, model, tasks, noise_cfg=NOISE, **options)
    run_epoch(strat, loaders, max_steps=1)
    start = time.perf_counter()
    logs = run_epoch(strat, loaders, max_steps=steps)
    return time.perf_counter() - start, int(logs["train/images"])


def throughput(size: int, preset: str, steps: int, batch: int) -> None:
    loader = DataLoader(RandomCxr(batch * (steps + 1), size), batch_size=batch)
    loaders = {"lung": loader, "abnormal": loader}
    for name, options in STRATEGIES.items():
        torch.manual_seed(0)
        model = shared_model(preset)
        strategy = name.split("-")[0]
        seconds, images = timed_epoch(model, [SEG, CLS], strategy, loaders, steps, **options)
        print(
            f"{size:>4} px  {name:<15} {images / seconds:8.1f} images/s  "
            f"trainable {count_trainable_params(model):>9,}"
        )


def shared_vs_baseline(size: int, preset: str, steps: int, batch: int) -> None:
    loader = DataLoader(RandomCxr(batch * (steps + 1), size), batch_size=batch)
    torch.manual_seed(0)
    # shared: the backbone is pretrained once (denoising), then both heads (independent)
    backbone = build_backbone("cdae", preset=preset)
    pre = MultiTaskModel(backbone, {"denoise": build_head("denoise", backbone, preset=preset)})
    t_pre, _ = timed_epoch(pre, [DEN], "joint", {"denoise": loader}, steps)
    p_pre = count_trainable_params(pre)
    for t in (SEG, CLS):
        pre.add_head(t.name, build_head(t.head, backbone, num_classes=t.num_classes, preset=preset))
    t_heads, _ = timed_epoch(
        pre, [SEG, CLS], "independent", {"lung": loader, "abnormal": loader}, steps
    )
    p_heads = count_trainable_params(pre)  # backbone now frozen: the heads only
    shared_s, shared_p = t_pre + t_heads, p_pre + p_heads
    # baseline: separate denoiser, then a separate model per task on its output
    denoiser = build_separate_model("denoise", preset=preset, task_name="denoise")
    base_s, _ = timed_epoch(denoiser, [DEN], "joint", {"denoise": loader}, steps)
    base_p = count_trainable_params(denoiser)
    for t in (SEG, CLS):
        sep = build_separate_model(
            t.kind, preset=preset, num_classes=t.num_classes, task_name=t.name
        )
        model = DenoisedInput(denoiser, sep)
        seconds, _ = timed_epoch(model, [t], "joint", {t.name: loader}, steps)
        base_s += seconds
        base_p += count_trainable_params(model)
    print(f"{size:>4} px  shared   {shared_s:7.2f} s/epoch  {shared_p:>10,} trainable params")
    print(f"{size:>4} px  baseline {base_s:7.2f} s/epoch  {base_p:>10,} trainable params")
    print(
        f"{size:>4} px  shared/baseline: time {shared_s / base_s:.2f}, "
        f"params {shared_p / base_p:.2f}  (epoch = {steps} steps x {batch} images per model)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--preset", default="default", help="paper | default | tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--smoke-test", action="store_true", help="tiny preset, 32 px, 1 step")
    args = parser.parse_args()
    if args.smoke_test:
        args.sizes, args.preset, args.steps, args.batch = [32], "tiny", 1, 2
    torch.set_num_threads(args.threads)
    print(
        f"cpu, torch threads {args.threads}, "
        f"preset {args.preset}, batch {args.batch}, {args.steps} timed steps"
    )
    for size in args.sizes:
        throughput(size, args.preset, args.steps, args.batch)
    for size in args.sizes:
        shared_vs_baseline(size, args.preset, args.steps, args.batch)


if __name__ == "__main__":
    main()
