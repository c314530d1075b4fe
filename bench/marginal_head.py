"""The marginal cost of one more head: what adding the TB head to a stage costs per batch,
against a separate TB model (issue 10's "one more head <= 0.15x of a separate model").

Builds the networks of ``sweeps/cxr_public.yaml`` exactly as its stages do
(``umsrep.runner.network.stage_spec``: the CDAE, the lung ``seg_cdae`` head with skips, the TB
classification head guided by the lung mask, the baseline's separate models fed by the frozen
denoiser) and times bare training steps (forward + backward + optimizer, the experiment's
precision and memory format) on random batches held in memory:

- independent (frozen backbone): lung head alone, lung + TB heads on one shared batch, each
  head alone with ``cache_views`` (the step after the recorded views: features remembered);
- joint: lung alone, lung + TB on one shared batch (``train.task_batches: shared``), and on
  one batch per task (``per_task``, the default: the TB batch pays its own forward pass, and
  its guide a lung-decoder forward);
- baseline: the separate lung model, the separate TB model;
- ``train.ema``: joint on a shared batch and the cached independent TB head with the weight
  average updated after each step (``umsrep/train/averaging.py``), what averaging adds.

The marginal cost of the TB head is (lung + TB) - (lung alone), per batch, over the separate
TB model's step. It leaves out data loading and validation, which a stage adds to both sides.
Meaningful only on an otherwise idle machine (the load average is printed).

    python bench/marginal_head.py [--size 128] [--batch 16] [--steps 20]
    python bench/marginal_head.py --smoke-test      # seconds: 32 px, 2 steps
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    import torch

    from umsrep.experiment import load_experiment
    from umsrep.models import build_model
    from umsrep.noise import NoiseConfig
    from umsrep.runner.network import stage_spec
    from umsrep.runner.plan import Stage
    from umsrep.strategies import build_strategy
    from umsrep.tasks import Task
    from umsrep.train.averaging import WeightAverage

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", type=Path, default=ROOT / "sweeps" / "cxr_public.yaml")
    p.add_argument("--size", type=int, default=None, help="default: the experiment's")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.size, args.steps, args.batch = 32, 2, 4
    torch.set_num_threads(os.cpu_count() or 1)
    exp = load_experiment(args.experiment, check_paths=False)
    size = args.size or exp.data.image_size
    tasks = {t.name: Task(name=t.name, kind=t.kind, column=t.column,
                          classes=("0", "1") if t.kind == "classification" else None,
                          head=t.head, head_kwargs=dict(t.head_kwargs), loss=t.loss)
             for t in exp.tasks}
    seg = next(n for n, t in tasks.items() if t.kind == "segmentation")
    cls = next(n for n, t in tasks.items() if t.kind == "classification")
    g = torch.Generator().manual_seed(0)

    def batch() -> dict:
        return {"image": torch.rand(args.batch, 1, size, size, generator=g) - 0.5,
                "image_mean": torch.zeros(args.batch),
                tasks[seg].column: (torch.rand(args.batch, 1, size, size, generator=g) > 0.5
                                    ).float(),
                f"has_{tasks[seg].column}": torch.ones(args.batch, dtype=torch.bool),
                "labels": {cls: torch.randint(0, 2, (args.batch,), generator=g)}}

    def step_ms(kind: str, strategy: str, names: tuple[str, ...], shared: bool,
                cache: bool = False, ema: bool = False) -> float:
        stage = Stage(id="bench", fold=0, kind=kind, strategy=strategy, tasks=names,
                      deps=("f0-backbone",) if kind == "baseline" else ())
        torch.manual_seed(0)
        model = build_model(stage_spec(exp, stage, [tasks[n] for n in names]))
        settings = exp.train_for(strategy)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        strat = build_strategy("joint" if kind == "baseline" else strategy, model,
                               [tasks[n] for n in names], lr=1e-3, noise_cfg=NoiseConfig(),
                               precision=settings.precision,
                               **({"cache_views": 1} if cache else {}))
        strat.channels_last = settings.channels_last
        one = batch()
        batches = {n: one if shared else batch() for n in names}
        strat.train_mode()
        average = WeightAverage(model, 0.99) if ema else None
        strat.step(batches)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.steps):
            strat.step(batches)
            if average is not None:
                average.update(model)
        return 1000 * (time.perf_counter() - t0) / args.steps

    print(f"{size} px, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} "
          f"threads, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ms = {
        "independent lung": step_ms("head", "independent", (seg,), True),
        "independent lung+TB shared": step_ms("head", "independent", (seg, cls), True),
        "independent TB": step_ms("head", "independent", (cls,), True),
        # cache_views: the frozen backbone's features remembered (the warm-up step encodes the
        # batch, every timed step re-uses it): a step after the recorded views
        "independent lung, cached": step_ms("head", "independent", (seg,), True, cache=True),
        "independent TB, cached": step_ms("head", "independent", (cls,), True, cache=True),
        "independent TB, cached, ema": step_ms("head", "independent", (cls,), True,
                                               cache=True, ema=True),
        "joint lung": step_ms("head", "joint", (seg,), True),
        "joint lung+TB shared": step_ms("head", "joint", (seg, cls), True),
        "joint lung+TB shared, ema": step_ms("head", "joint", (seg, cls), True, ema=True),
        "joint lung+TB per_task": step_ms("head", "joint", (seg, cls), False),
        "separate lung model": step_ms("baseline", "baseline", (seg,), True),
        "separate TB model": step_ms("baseline", "baseline", (cls,), True),
    }
    for name, value in ms.items():
        print(f"  {name:28s} {value:8.1f} ms/step")
    sep = ms["separate TB model"]
    for name, (with_tb, alone) in {
        "independent, shared batch": ("independent lung+TB shared", "independent lung"),
        "joint, shared batch": ("joint lung+TB shared", "joint lung"),
        "joint, per-task batches": ("joint lung+TB per_task", "joint lung"),
    }.items():
        extra = ms[with_tb] - ms[alone]
        print(f"TB head added to {name}: +{extra:.1f} ms/step = {extra / sep:.2f}x the "
              f"separate TB model's step")
    for name in ("joint lung+TB shared", "independent TB, cached"):
        print(f"train.ema on {name}: +{ms[name + ', ema'] - ms[name]:.1f} ms/step")
    for task, model in (("lung", "separate lung model"), ("TB", "separate TB model")):
        for variant in ("", ", cached"):
            print(f"independent {task} head{variant} / {model}: "
                  f"{ms[f'independent {task}{variant}'] / ms[model]:.2f}x per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
