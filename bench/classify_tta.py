"""Does test-time augmentation help a classification head on the external test images?

For every model of a finished run that holds ``--task`` (the fold ensembles with
``--ensembles``, the figures a run reports; else each fold's stage), the class-1 probability of
each external image with a label is computed from its original (read and normalized as the
cache was: ``data.contrast``, ``umsrep.derive.tta.normalize_image``) under each list of views
(``--tta``, lists split by ';'; entries as in ``evaluation.tta``: ``pad``, ``stretch``,
``shift:N``): the softmax probabilities of every view are averaged. Prints AUC, accuracy (0.5
cut) per dataset, model and view list. The run itself scores classification on its cache at the
experiment's ``data.fit``, one view (``pad`` here is that view, up to resampling).

``--adapt-bn`` adds, for each view list, the same models with their batch-norm statistics
re-estimated on each dataset's own images (those it scores; AdaBN, Li et al. 2016: unsupervised domain
adaptation that needs no label, only a batch of the target site's films; a running average over
all of them, in the first view of the list, every other layer in eval mode), the rows tagged
``+adabn``. It answers whether a site's shift in feature statistics is what costs the external
AUC.

Two probes of where a guided TB head looks, for the notes of ``sweeps/cxr_public.yaml``:
``--trim`` cuts each film's black edge bands off before its views (``trim_black_edges``;
Montgomery's landscape films come letterboxed), ``--dilate-guide PX`` pools every guided head
under its lung weights widened by PX pixels (``widen_guides``; the Shenzhen masks the lung head
learnt leave out opaque lung, where TB shows). Both change only what the trained models see.

    python bench/classify_tta.py RUN_DIR --ensembles [--task abnormal] [--adapt-bn] \
        [--trim] [--dilate-guide PX] [--tta "pad;pad,stretch;pad,shift:4;pad,stretch,shift:4"]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def adapt_batch_norm(model, images, batch_size: int = 16):
    """A copy of ``model`` whose batch norms hold the mean and variance of ``images [N, 1, H,
    W]`` (a cumulative average over batches in a seeded order); everything else as it was."""
    import copy

    import torch
    from torch import nn

    adapted = copy.deepcopy(model).eval()
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative: every batch weighs the same
        m.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            adapted(images[order[i:i + batch_size]])
    return adapted.eval()


def trim_black_edges(pixels, level: float = 0.03):
    """``pixels`` without the black rows and columns at its edges (letterbox bands): an edge
    row or column goes while its mean is under ``level`` of the full scale."""
    import numpy as np

    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    rows = pixels.mean(1) / scale >= level
    cols = pixels.mean(0) / scale >= level
    if not rows.any() or not cols.any():
        return pixels
    r = np.flatnonzero(rows)
    c = np.flatnonzero(cols)
    return pixels[r[0]:r[-1] + 1, c[0]:c[-1] + 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--task", default="abnormal")
    p.add_argument("--ensembles", action="store_true", help="the fold ensembles, not the folds")
    p.add_argument("--tta", default="pad;pad,stretch;pad,shift:4;pad,stretch,shift:4")
    p.add_argument("--adapt-bn", action="store_true",
                   help="also score with batch-norm statistics of each dataset's images")
    p.add_argument("--trim", action="store_true",
                   help="cut black edge bands off each film before its views (trim_black_edges)")
    p.add_argument("--dilate-guide", type=int, default=0, metavar="PX",
                   help="widen a guided head's lung weights by PX pixels (a max filter) before "
                   "it pools: does the guide hide opaque lung the Shenzhen masks leave out?")
    args = p.parse_args(argv)
    if args.dilate_guide < 0:
        p.error(f"--dilate-guide: pixels >= 0, got {args.dilate_guide}")
    return _score(args)


def widen_guides(model, pixels: int) -> int:
    """Every guided classification head of ``model`` (a fold model or an ensemble of them)
    pools under its guide widened by ``pixels`` more (``dilate``, on top of any it was trained
    with); returns how many heads were widened."""
    from umsrep.models.heads.classification import ClassificationHead

    heads = [m for m in model.modules() if isinstance(m, ClassificationHead) and m.guide]
    for head in heads:
        head.dilate += pixels
    return len(heads)


def _score(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import torch

    from umsrep.data.contrast import apply_contrast
    from umsrep.data.io import load_image
    from umsrep.derive.tta import normalize_image, shift_image, split_fits
    from umsrep.metrics import compute_auc
    from umsrep.predict import load_model_dir
    from umsrep.runner.data import load_run_data

    torch.set_num_threads(2)
    data = load_run_data(args.run_dir)
    index = data.index.iloc[data.external].reset_index(drop=True)
    views = [v.split(",") for v in args.tta.split(";")]
    if args.ensembles:
        folders = sorted(q for q in (args.run_dir / "ensembles").iterdir() if q.is_dir())
    else:
        folders = sorted(q / "checkpoint" for q in (args.run_dir / "stages").iterdir())
    rows = []
    for folder in folders:
        meta_path = folder / "model.json"
        if not meta_path.exists():
            continue
        if args.task not in [t["name"] for t in json.loads(meta_path.read_text())["tasks"]]:
            continue
        model, meta = load_model_dir(folder)
        model.eval()
        if args.dilate_guide and not widen_guides(model, args.dilate_guide):
            print(f"{folder.name}: no guided head to widen", flush=True)
        task = next(t for t in meta["tasks"] if t["name"] == args.task)
        classes = [str(c) for c in task["classes"]]
        labelled = index[index[task["column"]].astype(str).isin(classes)]
        size, contrast = int(meta["image_size"]), meta.get("contrast", "none")
        name = folder.name if args.ensembles else folder.parent.name
        trim = trim_black_edges if args.trim else (lambda a: a)
        pixels = {str(r.sample_id): apply_contrast(trim(load_image(r.image_path)), contrast)
                  for r in labelled.itertuples(index=False)}
        y = labelled[task["column"]].astype(str).map(classes.index).to_numpy()
        datasets = labelled["dataset"].astype(str).to_numpy()
        for fits in views:
            geometric, shift = split_fits(fits)
            moves = [(0, 0)] + ([(shift, shift), (-shift, -shift), (shift, -shift),
                                 (-shift, shift)] if shift else [])
            batches = [torch.cat([shift_image(normalize_image(pixels[sid], size, fit)[0], dy, dx)
                                  for fit in dict.fromkeys(geometric) for dy, dx in moves])
                       for sid in labelled["sample_id"].astype(str)]
            variants = [("", {ds: model for ds in set(datasets)})]
            if args.adapt_bn:
                firsts = {ds: torch.cat([b[:1] for b, d in zip(batches, datasets, strict=True)
                                         if d == ds]) for ds in set(datasets)}
                variants.append(("+adabn", {ds: adapt_batch_norm(model, x)
                                            for ds, x in firsts.items()}))
            for tag, models in variants:
                probs = []
                for xs, ds in zip(batches, datasets, strict=True):
                    with torch.no_grad():
                        out = models[ds](xs, [args.task])[args.task].float()
                    probs.append(float(torch.softmax(out, 1)[:, 1].mean()))
                prob = np.asarray(probs)
                for ds in sorted(set(datasets)):
                    sel = datasets == ds
                    rows.append({"model": name, "tta": ",".join(fits) + tag, "dataset": ds,
                                 "n": int(sel.sum()),
                                 "auc": float(compute_auc(torch.tensor(y[sel]),
                                                          torch.tensor(prob[sel]))),
                                 "accuracy": float(((prob[sel] > 0.5) == y[sel]).mean())})
        print(f"{name}: done", flush=True)
    df = pd.DataFrame(rows)
    print(df.pivot_table(index=["dataset", "model"], columns="tta", values="auc").round(4)
          .to_string())
    print(df.groupby(["dataset", "tta"])[["auc", "accuracy"]].mean().round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
