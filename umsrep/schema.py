"""The run folder: the contract between the runner (umsrep, sweeps) and the analysis package.

A run folder holds (all tables Parquet, written atomically: temp file then ``os.replace``):

``config.yaml``
    The resolved experiment config, plus ``git_revision`` and ``schema_version``.
``environment.json``
    The versions that produced the run: Python, umsrep (version, git commit/describe), torch,
    Ray and every installed package (``umsrep/runner/environment.py`` lists the keys); a resume
    with other versions adds ``environment-resume-<UTC time>.json``. Optional for the analysis.
``stages.parquet`` (one row per training stage)
    fold (int), kind ("backbone" | "head" | "baseline"), strategy (str: "independent",
    "alternating", "joint", ..., "baseline" for baseline stages, "" for the backbone),
    task (str: task name; "denoise" for a denoiser, "" for a multi-task stage), status
    ("done" | "failed"), wall_s (float, seconds of training), epochs (int), trainable_params
    (int), checkpoint (str: folder that ``umsrep predict`` takes, may be ""), task_seconds
    (str: JSON {task: seconds of the training steps that trained it}; "" or "{}" in folders
    written before it; ``analysis/cost.py head_costs`` shares a multi-task stage out by it).
``metrics.parquet`` (long format, one row per value)
    fold (int; -1 for the fold ensemble: the mean of the k fold models' probabilities on the
    external test splits, ``umsrep/runner/ensemble.py``; never part of a fold statistic),
    strategy (str; "baseline" for the baseline, "shared" for the backbone's own), task (str), split ("val" | "test" |
    "test:<dataset>"), metric (str: accuracy, f1, mcc, auc, iou, dice, pixel_accuracy,
    dice_orig, dice_orig_min, iou_orig, psnr, ssim, ms_ssim, loss; a segmentation ensemble has
    only the ``*_orig`` ones), value (float), noise (str, "" unless the metric is per noise
    level, e.g. "gaussian-20", "poisson-30").
``predictions.parquet`` (one row per test or validation sample and task)
    fold, strategy, task, split, sample_id (str), y_true (int), y_pred (int), score (float:
    probability of the positive / predicted class; for segmentation the per-image Dice), and
    for segmentation ``iou`` (float) so correctness can be thresholded later. For segmentation
    ``y_true`` is 1 and ``y_pred`` is 1 when ``iou >= SEGMENTATION_CORRECT_IOU``. Rows with
    fold -1 are the fold ensemble's (test splits only); its segmentation Dice and IoU are at
    each image's original size, cut at the threshold chosen on the held-out folds.
``curves.parquet`` (long format, one row per validated epoch and value; optional: runs made
    before it have none)
    fold, kind, strategy, task (as in stages.parquet: the stage's), epoch (int, 0-based),
    elapsed_s (float: the stage's training time up to the end of that epoch, validation
    included), metric (str: ``<task>/<metric>``, e.g. ``lung/dice``), value (float). The cost
    tables' time to reach the baseline's quality is read from it.
``ensembles/<template>/``
    One fold ensemble per template (a stage id without its fold, e.g. ``joint``,
    ``independent-lung``, ``baseline-abnormal``): its metrics/predictions.parquet (merged into
    the run's tables), ``model.json`` (``members``, ``threshold``; ``umsrep predict`` takes the
    folder) and ``result.json`` (members, threshold and the held-out Dice it was chosen on).
``tune/<stage-name>/...``
    Ray Tune results of each sweep (``trials.parquet``: one row per trial with its config keys
    prefixed ``config/`` and its reported metrics).
``samples/``
    Optional PNG galleries (noisy/denoised pairs, segmentation overlays, Grad-CAM) listed in
    ``samples/index.parquet`` (kind, fold, strategy, task, sample_id, path).
"""

from __future__ import annotations

SCHEMA_VERSION = 1

STAGES_COLUMNS: dict[str, str] = {
    "fold": "int64",
    "kind": "string",
    "strategy": "string",
    "task": "string",
    "status": "string",
    "wall_s": "float64",
    "epochs": "int64",
    "trainable_params": "int64",
    # of trainable_params, the shared backbone's: a head stage that fine-tunes the backbone a
    # backbone stage trained (joint, alternating); 0 when frozen or in run folders before it
    "backbone_params": "int64",
    "checkpoint": "string",
    # JSON {task: seconds of the training steps that trained it} (result.json "task_seconds");
    # "" or "{}" in run folders written before it
    "task_seconds": "string",
}

METRICS_COLUMNS: dict[str, str] = {
    "fold": "int64",
    "strategy": "string",
    "task": "string",
    "split": "string",
    "metric": "string",
    "value": "float64",
    "noise": "string",
}

PREDICTIONS_COLUMNS: dict[str, str] = {
    "fold": "int64",
    "strategy": "string",
    "task": "string",
    "split": "string",
    "sample_id": "string",
    "y_true": "int64",
    "y_pred": "int64",
    "score": "float64",
    "iou": "float64",
}

CURVES_COLUMNS: dict[str, str] = {
    "fold": "int64",
    "kind": "string",
    "strategy": "string",
    "task": "string",
    "epoch": "int64",
    "elapsed_s": "float64",
    "metric": "string",
    "value": "float64",
}

SAMPLES_COLUMNS: dict[str, str] = {
    "kind": "string",
    "fold": "int64",
    "strategy": "string",
    "task": "string",
    "sample_id": "string",
    "path": "string",
}

BASELINE = "baseline"
SHARED = "shared"
"""Strategy label of the shared backbone's own rows in metrics and predictions (its denoising
scores); stages.parquet labels the backbone stage "". Neither is a strategy to compare."""
BACKBONE_LABELS = ("", SHARED)

SEGMENTATION_CORRECT_IOU = 0.9
"""A segmentation counts as correct when its per-image IoU is at least this; one definition for
training-time evaluation (``predictions.parquet``'s ``y_pred``) and the analysis (McNemar).

0.9, not the detection convention 0.5: the organ masks this project segments (lung fields) reach
per-image IoUs of 0.94-0.98 in the paper, so at 0.5 nearly every image of every model counts as
correct and McNemar has no discordant pairs to count; at 0.9 a mask is correct when it is usable
and wrong when it misses or leaks a clinically visible part of the organ. For structures that
are segmented less exactly, pass another threshold to the report (``--iou-threshold``).
"""
