"""Does a finished run's training augmentation shift what its classifiers say on test images?

For every stage of the run with a classification task (or the ones ``--stages`` names), the
held-out fold's images are classified twice: as scoring sees them (untouched) and as training
saw them (through ``data.augment``, seeded). A model that only ever trained on resampled
images can meet the untouched ones as another population: the mean probability of the positive
class moves, and accuracy falls to the share of one class while the AUC stays. Prints, per
stage and view, the mean probability, the share predicted positive, the true share,
accuracy and AUC. Issue 10: with every training image warped (bilinear), cxr_public's joint
TB head gave fold 0's held-out Shenzhen a mean probability of 0.92 untouched and 0.65
augmented (accuracy 0.53 and 0.67); with half of the images warped, 0.44 and 0.40.

    python bench/augment_shift.py RUN_DIR [--stages f0-joint,f0-baseline-abnormal]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import pandas as pd
    import torch
    import yaml
    from torch.utils.data import DataLoader
    from torchmetrics.functional.classification import binary_auroc

    from umsrep.data.augment import build_augment
    from umsrep.data.cache import load_cache
    from umsrep.data.dataset import CachedDataset, TaskLabel
    from umsrep.predict import load_model_dir
    from umsrep.runner.data import load_run_data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--stages", default=None, help="comma-separated stage ids (default: all)")
    args = p.parse_args(argv)
    if not (args.run_dir / "data.json").is_file():
        p.error(f"{args.run_dir} is not a run folder (no data.json)")
    torch.set_num_threads(2)
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())["experiment"]
    augment = build_augment(config["data"].get("augment", "none"))
    data = load_run_data(args.run_dir)
    cache = load_cache(data.cache_path)
    wanted = set(args.stages.split(",")) if args.stages else None
    unknown = sorted((wanted or set()) - {d.name for d in (args.run_dir / "stages").iterdir()})
    if unknown:
        p.error(f"no stage {', '.join(unknown)} in {args.run_dir / 'stages'}")
    rows = []
    for stage in sorted((args.run_dir / "stages").iterdir()):
        model_json = stage / "checkpoint" / "model.json"
        if (wanted and stage.name not in wanted) or not model_json.is_file():
            continue
        model, meta = load_model_dir(stage / "checkpoint")  # eval mode: scoring leaves it as is
        fold = data.folds[int(stage.name.split("-")[0][1:])]
        for task in (t for t in meta["tasks"] if t["kind"] == "classification"
                     and len(t.get("classes") or ()) == 2):
            labels = {task["name"]: TaskLabel(column=task["column"],
                                              classes=tuple(task["classes"]))}
            for view, aug in (("untouched", None), ("augmented", augment)):
                ds = CachedDataset(cache, fold.test, labels, augment=aug)
                probs, truth = [], []
                torch.manual_seed(0)
                with torch.no_grad():
                    for batch in DataLoader(ds, batch_size=16):
                        out = model(batch["image"], [task["name"]])[task["name"]].float()
                        probs.append(torch.softmax(out, 1)[:, 1])
                        truth.append(batch["labels"][task["name"]])
                prob, y = torch.cat(probs), torch.cat(truth)
                keep = y >= 0
                prob, y = prob[keep], y[keep]
                rows.append({"stage": stage.name, "task": task["name"], "view": view,
                             "mean_p": float(prob.mean()),
                             "pred_pos": float((prob > 0.5).float().mean()),
                             "true_pos": float(y.float().mean()),
                             "accuracy": float(((prob > 0.5).long() == y).float().mean()),
                             "auc": float(binary_auroc(prob, y)) if len(np.unique(y)) > 1
                             else float("nan")})
        print(f"{stage.name}: done", flush=True)
    if not rows:
        print("no stage with a two-class classification task")
        return 1
    pd.set_option("display.width", 160)
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
