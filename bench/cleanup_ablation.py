"""What lung-mask clean-up buys on the external test sets of a finished run (issue 10 item 3).

For every lung model of the run (each fold's stage of each strategy and the baseline), the TTA
probability maps of the external test images are computed once at the original size and
thresholded at the stage's chosen threshold; then the mask is scored (Dice per image) with no
clean-up, with islands < 10 % of the largest dropped and holes filled, and with that plus
``keep_largest: 2``. Prints the mean and worst image per dataset and variant.
``--thresholds held_out,0.5`` repeats it per threshold ("held_out": each stage's own choice,
``evaluation.threshold``); ``--clean`` limits the clean-up variants. ``--ensembles`` scores the
run's fold ensembles (``RUN_DIR/ensembles``, the figures a run reports) instead of the fold
models; ``--tta`` replaces the run's ``evaluation.tta`` (e.g. ``pad,stretch,shift:4``), one
list per ``;``.

    python bench/cleanup_ablation.py RUN_DIR [--task lung] [--thresholds held_out,0.5]
    python bench/cleanup_ablation.py RUN_DIR --ensembles --thresholds 0.5 \
        --clean islands+holes+keep2 --tta "pad,stretch;pad,stretch,shift:4"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "none": None,
    "islands+holes": {"min_fraction": 0.1, "fill_holes": True},
    "islands+holes+keep2": {"min_fraction": 0.1, "fill_holes": True, "keep_largest": 2},
}


def main(argv: list[str] | None = None) -> int:
    import pandas as pd
    import torch

    from umsrep.predict import load_model_dir
    from umsrep.runner.data import load_run_data
    from umsrep.runner.original_size import score_original_size, tta_probabilities

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--task", default="lung")
    p.add_argument("--thresholds", default="held_out",
                   help="comma-separated: held_out and/or numbers")
    p.add_argument("--clean", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--ensembles", action="store_true", help="the fold ensembles, not the folds")
    p.add_argument("--tta", default=None,
                   help="views instead of the run's evaluation.tta; ';' between lists")
    args = p.parse_args(argv)
    if not (args.run_dir / "data.json").is_file():
        p.error(f"{args.run_dir} is not a run folder (no data.json)")
    rules = [r if r == "held_out" else float(r) for r in args.thresholds.split(",")]
    variants = {k: VARIANTS[k] for k in args.clean.split(",")}
    torch.set_num_threads(2)
    data = load_run_data(args.run_dir)
    index = data.index.iloc[data.external].reset_index(drop=True)
    index = index[index["mask_path"].notna()]
    rows = []
    views = [v.split(",") for v in args.tta.split(";")] if args.tta else [None]
    if args.ensembles:
        folders = sorted(p for p in (args.run_dir / "ensembles").iterdir() if p.is_dir())
    else:
        folders = sorted(p / "checkpoint" for p in (args.run_dir / "stages").iterdir())
    for folder in folders:
        meta_path = folder / "model.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        if args.task not in [t["name"] for t in meta["tasks"]]:
            continue
        model, meta = load_model_dir(folder)
        name = folder.name if args.ensembles else folder.parent.name
        task = next(t for t in meta["tasks"] if t["name"] == args.task)
        # an ensemble folder keeps its result.json beside model.json, a stage one level up
        held_out = held_out_threshold(folder if args.ensembles else folder.parent, meta,
                                      args.task)
        ids = index["sample_id"].astype(str).tolist()
        masks = dict(zip(index["sample_id"].astype(str), index["mask_path"], strict=True))
        for fits in views:
            fits = fits or list(meta.get("tta") or ["pad"])
            probs = tta_probabilities(model, type("T", (), {"name": task["name"]})(), ids,
                                      index, int(meta["image_size"]), fits,
                                      contrast=meta.get("contrast", "none"))
            for rule in rules:
                thr = held_out if rule == "held_out" else rule
                for variant, clean in variants.items():
                    s = score_original_size(probs, masks, "stretch", clean, None, thr)
                    s = s.merge(index[["sample_id", "dataset"]].astype({"sample_id": str}),
                                on="sample_id")
                    for ds, g in s.groupby("dataset"):
                        rows.append({"stage": name, "tta": ",".join(fits),
                                     "threshold": str(rule), "variant": variant,
                                     "dataset": ds, "mean": g["dice"].mean(),
                                     "min": g["dice"].min()})
        print(f"{name}: done", flush=True)
    df = pd.DataFrame(rows)
    df["strategy"] = (df["stage"] if args.ensembles
                      else df["stage"].str.split("-", n=1).str[1])
    keys = ["dataset", "strategy", "tta", "threshold", "variant"]
    print(df.groupby(keys)[["mean", "min"]].mean().round(4).to_string())
    print(df.groupby(["dataset", "tta", "threshold", "variant"])[["mean", "min"]].mean()
          .round(4).to_string())
    return 0


def held_out_threshold(stage: Path, meta: dict, task: str) -> float:
    """The threshold the held-out fold picks for a stage (or a fold ensemble): its model.json's,
    unless the run fixed one (``evaluation.threshold``), then re-picked from the held-out Dice
    its result.json keeps."""
    import numpy as np

    from umsrep.runner.threshold import pick_threshold

    result = json.loads((stage / "result.json").read_text())
    if result.get("threshold_rule") != "fixed":
        return float((meta.get("threshold") or {}).get(task, 0.5))
    dice = result["threshold_val_dice"][task]
    return pick_threshold(np.array([dice]), result["threshold_grid"])


if __name__ == "__main__":
    sys.exit(main())
