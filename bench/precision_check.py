"""Does bf16 autocast keep the metrics? fp32 vs bf16, the same stage, two seeds each.

Trains the ``cxr_public`` model (CDAE backbone + lung ``seg_cdae`` + TB classification head,
joint strategy, from random initialization so the encoder trains too) on fold 0 of 3 of the
Shenzhen images (``../shared/data/cxr``; synthetic CXRs when absent) in fp32 and in bf16
autocast, each with seed 0 and seed 1, and prints per validated epoch the training loss, the
lung Dice and the TB AUC on the held-out images, then one line per metric comparing the
bf16-fp32 difference (same seed) with the seed-to-seed difference (same precision): bf16
"keeps the metrics" when its difference is within the seed noise.

    python bench/precision_check.py                 # ~6 min on a 2-core CPU with native bf16
    python bench/precision_check.py --epochs 4      # shorter
    python bench/precision_check.py --smoke-test    # seconds: synthetic, 32 px, 1 epoch

bf16 is only worth it (and only chosen by ``train.precision: auto``) on a CPU with native bf16
(AVX-512 BF16 / AMX) or on CUDA; elsewhere it is emulated and 8-17x slower than fp32.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CURVES = ("train/loss", "val/lung/dice", "val/abnormal/auc")


def experiment(precision: str, seed: int, epochs: int, size: int, smoke: bool) -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / "sweeps" / "cxr_public.yaml").read_text())
    shenzhen = DATA / "cxr" / "ChinaSet_AllFiles"
    if shenzhen.is_dir() and not smoke:
        train = [{"importer": "shenzhen", "path": str(shenzhen)}]
    else:
        train = [{"synthetic": "cxr", "n": 48 if smoke else 400, "seed": 0}]
    cfg["data"] = {**cfg["data"], "image_size": size, "train": train}
    for key in ("pretrain", "test"):
        cfg["data"].pop(key, None)
    cfg["seed"] = seed
    cfg["folds"] = {"k": 3, "run": 1, "seed": 0, "val_fraction": 0.1, "stratify": "abnormal"}
    cfg["backbone"] = {**cfg["backbone"], "pretrain": "none"}
    cfg["backbone"].pop("train", None)
    cfg["strategies"] = [s for s in cfg["strategies"] if s["name"] == "joint"]
    cfg["baseline"] = {"enabled": False}
    cfg["train"] = {**cfg["train"], "epochs": epochs, "patience": 0, "plateau_patience": 0,
                    "val_every": 1, "precision": precision,
                    **({"max_steps_per_epoch": 2} if smoke else {})}
    cfg["evaluation"] = {}
    for key in ("search", "paper_reference", "sweeps"):
        cfg.pop(key, None)
    return cfg


def train_once(precision: str, seed: int, args, cache: Path) -> dict[str, list[float]]:
    """Per validated epoch: each CURVES entry (the loop's history, from the stage's last.pt)."""
    from umsrep.experiment import load_experiment
    from umsrep.runner.local import prepare_run
    from umsrep.runner.stage import run_stage
    from umsrep.train.checkpoint import LAST, load_checkpoint

    cfg = experiment(precision, seed, args.epochs, args.size, args.smoke_test)
    cfg["data"]["cache_dir"] = str(cache)
    exp = load_experiment(data=copy.deepcopy(cfg), check_paths=False)
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare_run(exp, Path(tmp) / "runs")
        t0 = time.perf_counter()
        result = run_stage(run.ctx, run.plan.by_id()["f0-joint"])
        wall = time.perf_counter() - t0
        history = load_checkpoint(run.run_dir / "stages" / "f0-joint" / "train_state" / LAST)
    out = {k: [float(h.get(k, np.nan)) for h in history["history"]] for k in CURVES}
    out["train_s"] = [float(result["wall_s"])]
    out["stage_s"] = [wall]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--smoke-test", action="store_true", help="synthetic, 32 px, 1 epoch")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.epochs, args.size = 1, 32
    from umsrep.precision import cpu_has_native_bf16

    print(f"native bf16 {cpu_has_native_bf16()}, {args.epochs} epochs at {args.size} px, "
          f"seeds {args.seeds}")
    runs: dict[tuple[str, int], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                runs[precision, seed] = r = train_once(precision, seed, args, Path(cache))
                print(f"\n{precision} seed {seed}: training {r['train_s'][0]:.0f} s "
                      f"(stage {r['stage_s'][0]:.0f} s)")
                for k in CURVES:
                    print(f"  {k:18s} " + " ".join(f"{v:.3f}" for v in r[k]))
    print()
    s0, s1 = args.seeds[0], args.seeds[-1]
    for k in CURVES:
        prec = [np.abs(np.subtract(runs["bf16", s][k], runs["fp32", s][k])) for s in args.seeds]
        seed = [np.abs(np.subtract(runs[p, s0][k], runs[p, s1][k])) for p in ("fp32", "bf16")]
        final_prec = max(float(d[-1]) for d in prec)
        final_seed = max(float(d[-1]) for d in seed) if s0 != s1 else float("nan")
        print(f"{k}: |bf16 - fp32| mean over epochs {np.mean(prec):.4f}, last epoch "
              f"{final_prec:.4f}; |seed {s0} - seed {s1}| mean {np.mean(seed):.4f}, last "
              f"{final_seed:.4f}")
    speed = [runs["fp32", s]["train_s"][0] / runs["bf16", s]["train_s"][0] for s in args.seeds]
    print(f"bf16 speed-up in training time: {np.mean(speed):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
