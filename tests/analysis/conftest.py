"""A realistic synthetic run folder (schema in ``umsrep/schema.py``), labelled the way the runner
labels one (the backbone's stage is kind "backbone", strategy "", task "denoise"; its own metric
rows are strategy "shared", ``umsrep.schema.SHARED``) and scored with the runner's metric
functions (``umsrep.metrics``, as ``umsrep.train.evaluate`` calls them). For the report's scale
and layout; tests of what the analysis computes read ``runner_run_dir`` (tests/conftest.py), a
folder the runner itself wrote. The scenario: CXR heterogeneous, a denoising backbone, lung
segmentation and abnormality classification, three strategies plus the baseline, k folds
sharing one external test set (split "test"), each fold also scored on its own held-out part of the fine-tuning set
(split "val", ``n_val`` images per fold), Tune trials and a small PNG gallery. With
``datasets``, the external test set pools those datasets and each is also scored on its own
(split "test:<dataset>", a contiguous share of the test images), as the runner's
``eval_splits`` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from umsrep.metrics import METRICS
from umsrep.schema import (
    METRICS_COLUMNS,
    PREDICTIONS_COLUMNS,
    SAMPLES_COLUMNS,
    SCHEMA_VERSION,
    STAGES_COLUMNS,
)

STRATEGIES = ("independent", "alternating", "joint")
SEG, CLS = "lung_segmentation", "abnormality"
# how often each model is right (classification) and its mean IoU (segmentation)
ACCURACY = {"independent": 0.90, "alternating": 0.88, "joint": 0.84, "baseline": 0.74}
MEAN_IOU = {"independent": 0.95, "alternating": 0.94, "joint": 0.90, "baseline": 0.92}
NOISES = ["gaussian-10", "gaussian-30", "gaussian-50", "poisson-30"]


def _stages(n_folds: int, rng: np.random.Generator, strategies: tuple[str, ...]) -> pd.DataFrame:
    rows = []

    def add(fold: int, kind: str, strategy: str, task: str, minutes: float, params: int) -> None:
        rows.append(
            {
                "fold": fold,
                "kind": kind,
                "strategy": strategy,
                "task": task,
                "status": "done",
                "wall_s": minutes * 60 * rng.uniform(0.95, 1.05),
                "epochs": 20,
                "trainable_params": params,
                "checkpoint": f"ckpt/{fold}/{kind}-{strategy}-{task}",
                "task_seconds": "",  # written before step times were kept: an even split
            }
        )

    for fold in range(n_folds):
        add(fold, "backbone", "", "denoise", 30.2, 800_067)
        for s in strategies:
            if s == "independent":
                add(fold, "head", s, SEG, 0.81, 786_497)
                add(fold, "head", s, CLS, 0.25, 295_715)
            else:
                add(fold, "head", s, "", 1.4, 1_882_279)
        add(fold, "baseline", "baseline", "denoise", 30.2, 800_067)
        add(fold, "baseline", "baseline", SEG, 14.8, 786_497)
        add(fold, "baseline", "baseline", CLS, 0.93, 1_573_506)
    # a run folder written before backbone_params (analysis.load fills it with 0)
    return pd.DataFrame(rows).astype(
        {c: t for c, t in STAGES_COLUMNS.items() if c != "backbone_params"})


def _predictions(
    n_folds: int,
    n_test: int,
    rng: np.random.Generator,
    strategies: tuple[str, ...],
    split: str = "test",
    prefix: str = "mc",
) -> pd.DataFrame:
    """Every fold model scores the same ``n_test`` images (split "test"), or fold j scores its
    own ``n_test`` held-out images ``<prefix>-<j>-<i>`` (split "val")."""
    y_true = rng.integers(0, 2, n_test)
    rows = []
    for fold in range(n_folds):
        ids = [
            f"{prefix}-{fold}-{i:03d}" if split == "val" else f"{prefix}-{i:03d}"
            for i in range(n_test)
        ]
        for s in (*strategies, "baseline"):
            right = rng.random(n_test) < ACCURACY.get(s, 0.86)
            y_pred = np.where(right, y_true, 1 - y_true)
            score = np.clip(np.where(y_pred == 1, 0.75, 0.25) + rng.normal(0, 0.1, n_test), 0, 1)
            iou = np.clip(rng.normal(MEAN_IOU.get(s, 0.93), 0.04, n_test), 0, 1)
            for i in range(n_test):
                rows.append(
                    {
                        "fold": fold,
                        "strategy": s,
                        "task": CLS,
                        "split": split,
                        "sample_id": ids[i],
                        "y_true": y_true[i],
                        "y_pred": y_pred[i],
                        "score": score[i],
                        "iou": np.nan,
                    }
                )
                rows.append(
                    {
                        "fold": fold,
                        "strategy": s,
                        "task": SEG,
                        "split": split,
                        "sample_id": ids[i],
                        "y_true": 1,
                        "y_pred": int(iou[i] >= 0.5),
                        "score": 2 * iou[i] / (1 + iou[i]),
                        "iou": iou[i],
                    }
                )
    return pd.DataFrame(rows).astype(PREDICTIONS_COLUMNS)


def _per_dataset(preds: pd.DataFrame, datasets: tuple[str, ...]) -> pd.DataFrame:
    """The "test" rows of each dataset's share of the test images again, as "test:<dataset>"."""
    test = preds[preds["split"] == "test"]
    ids = sorted(set(test["sample_id"]))
    shares = np.array_split(np.array(ids), len(datasets))
    parts = [
        test[test["sample_id"].isin(share)].assign(split=f"test:{name}")
        for name, share in zip(datasets, shares, strict=True)
    ]
    return pd.concat([preds, *parts], ignore_index=True).astype(PREDICTIONS_COLUMNS)


def _metrics(preds: pd.DataFrame, n_folds: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for (split, fold, s, task), g in preds.groupby(["split", "fold", "strategy", "task"]):
        if task == SEG:
            values = {
                "iou": g["iou"].mean(),
                "dice": g["score"].mean(),
                "pixel_accuracy": 0.9 + 0.1 * g["iou"].mean(),
            }
        else:
            y_true, y_pred = g["y_true"].to_numpy(), g["y_pred"].to_numpy()
            values = {n: METRICS.get(n)(y_true, y_pred) for n in ("accuracy", "f1", "mcc")}
        rows += [
            {
                "fold": fold,
                "strategy": s,
                "task": task,
                "split": split,
                "metric": m,
                "value": v,
                "noise": "",
            }
            for m, v in values.items()
        ]
    for fold in range(n_folds):
        for s, offset in (("shared", 0.0), ("baseline", -1.0)):
            for k, noise in enumerate(NOISES):
                psnr = 39.0 - 2.7 * k + offset + rng.normal(0, 0.3)
                for m, v in (
                    ("psnr", psnr),
                    ("ssim", 0.96 - 0.04 * k),
                    ("ms_ssim", 0.99 - 0.03 * k),
                ):
                    rows.append(
                        {
                            "fold": fold,
                            "strategy": s,
                            "task": "denoise",
                            "split": "test",
                            "metric": m,
                            "value": v + rng.normal(0, 0.005),
                            "noise": noise,
                        }
                    )
    return pd.DataFrame(rows).astype(METRICS_COLUMNS)


def _trials(rng: np.random.Generator, n: int = 12) -> pd.DataFrame:
    lr = 10 ** rng.uniform(-4, -2, n)
    return pd.DataFrame(
        {
            "trial_id": [f"t{i:03d}" for i in range(n)],
            "config/lr": lr,
            "config/batch_size": rng.choice([8, 16, 32], n),
            "config/dropout": rng.uniform(0, 0.5, n),
            "val_loss": 0.3 + (np.log10(lr) + 3) ** 2 * 0.1 + rng.normal(0, 0.02, n),
            "val_accuracy": rng.uniform(0.7, 0.9, n),
            "training_iteration": 10,
            "time_total_s": rng.uniform(20, 60, n),
        }
    )


def _samples(run_dir: Path, rng: np.random.Generator) -> None:
    folder = run_dir / "samples"
    folder.mkdir()
    rows = []
    for kind, task, s in (
        ("denoise", "denoise", ""),
        ("segmentation", SEG, "independent"),
        ("gradcam", CLS, "independent"),
    ):
        for i in range(2):
            img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
            img[8:24, 8:24, i] = 255  # a visible square so screenshots show the images
            name = f"{kind}-{i}.png"
            Image.fromarray(img).save(folder / name)
            rows.append(
                {
                    "kind": kind,
                    "fold": 0,
                    "strategy": s,
                    "task": task,
                    "sample_id": f"mc-{i:03d}",
                    "path": f"samples/{name}",
                }
            )
    pd.DataFrame(rows).astype(SAMPLES_COLUMNS).to_parquet(folder / "index.parquet")


def make_run_folder(
    root: Path,
    name: str = "cxr-hetero",
    n_folds: int = 5,
    n_test: int = 40,
    n_val: int = 12,
    seed: int = 0,
    strategies: tuple[str, ...] = STRATEGIES,
    trials: bool = True,
    samples: bool = True,
    datasets: tuple[str, ...] = (),
    paper_reference: dict | None = None,
) -> Path:
    """Write a complete synthetic run folder under ``root/name`` and return its path;
    ``paper_reference`` goes into ``config.yaml``'s experiment as the runner writes it."""
    rng = np.random.default_rng(seed)
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "schema_version": SCHEMA_VERSION,
        "git_revision": "0" * 40,
        # the shape umsrep.runner.runfolder.write_config gives it
        "experiment": {
            "name": name,
            "folds": {"k": n_folds},
            "strategies": [{"name": s} for s in strategies],
            "evaluation": {"correct_iou": 0.9},
        },
    }
    if paper_reference:
        config["experiment"]["paper_reference"] = paper_reference
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    _stages(n_folds, rng, strategies).to_parquet(run_dir / "stages.parquet")
    preds = _predictions(n_folds, n_test, rng, strategies)
    # its own generator, so the test-split values stay those of a fixture without "val" rows
    val_rng = np.random.default_rng(seed + 1)
    val = _predictions(n_folds, n_val, val_rng, strategies, split="val", prefix="sz")
    preds = pd.concat([preds, val], ignore_index=True)
    if datasets:
        preds = _per_dataset(preds, datasets)
    preds.to_parquet(run_dir / "predictions.parquet")
    _metrics(preds, n_folds, rng).to_parquet(run_dir / "metrics.parquet")
    if trials:
        for stage in ("independent-abnormality", "joint"):
            (run_dir / "tune" / stage).mkdir(parents=True)
            _trials(rng).to_parquet(run_dir / "tune" / stage / "trials.parquet")
    if samples:
        _samples(run_dir, rng)
    return run_dir


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def make_run(tmp_path: Path):
    def make(**kwargs) -> Path:
        return make_run_folder(tmp_path, **kwargs)

    return make
