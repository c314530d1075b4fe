"""Patient-level, label-stratified k-fold splits and external train/test splits.

All splits return positional indices into the frame they were given (e.g. a cache's ``index``).
A patient's images always stay in one part. Assignment is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

_MISSING = "<missing>"


@dataclass(frozen=True)
class Fold:
    """Positional index arrays (int64) into the frame the split was computed on."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _patients(index: pd.DataFrame, label_column: str | None) -> pd.DataFrame:
    """One row per patient: ``patient_id``, ``stratum`` (its most common label), ``n`` images."""
    if "patient_id" not in index.columns:
        raise KeyError("split: the frame has no 'patient_id' column")
    if label_column is not None and label_column not in index.columns:
        raise KeyError(f"split: label column {label_column!r} not in {sorted(index.columns)}")
    labels = (
        index[label_column].astype("string").fillna(_MISSING)
        if label_column
        else pd.Series(_MISSING, index=index.index)
    )
    frame = pd.DataFrame({"patient_id": index["patient_id"].astype(str), "label": labels.values})
    stratum = frame.groupby("patient_id")["label"].agg(lambda s: s.value_counts().index[0])
    counts = frame.groupby("patient_id").size()
    return pd.DataFrame({"stratum": stratum, "n": counts}).reset_index()


def _assign_groups(patients: pd.DataFrame, k: int, rng: np.random.Generator) -> dict[str, int]:
    """Greedy stratified group assignment: within each stratum, patients (shuffled, then
    largest first) go to the part with the fewest images of that stratum, ties to the smallest
    part overall. Balanced like sklearn's StratifiedGroupKFold, without the dependency."""
    part_total = np.zeros(k)
    assignment: dict[str, int] = {}
    for _, group in sorted(patients.groupby("stratum"), key=lambda kv: str(kv[0])):
        order = rng.permutation(len(group))
        group = group.iloc[order].sort_values("n", ascending=False, kind="stable")
        part_stratum = np.zeros(k)
        for pid, n in zip(group["patient_id"], group["n"], strict=True):
            best = min(range(k), key=lambda f: (part_stratum[f], part_total[f], f))
            assignment[pid] = best
            part_stratum[best] += n
            part_total[best] += n
    return assignment


def _carve_val(
    pool: np.ndarray, index: pd.DataFrame, label_column: str | None, val_fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``pool`` into (train, val) by patient, stratified, ~val_fraction in val."""
    if val_fraction <= 0 or len(pool) == 0:
        return pool, pool[:0]
    sub = index.iloc[pool]
    patients = _patients(sub, label_column)
    parts = max(2, round(1 / val_fraction))
    assignment = _assign_groups(patients, parts, rng)
    is_val = sub["patient_id"].astype(str).map(assignment).to_numpy() == 0
    return pool[~is_val], pool[is_val]


def kfold_splits(
    index: pd.DataFrame,
    k: int = 10,
    label_column: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> list[Fold]:
    """``k`` patient-disjoint folds, stratified by ``label_column``; each fold's test part is one
    k-th of the patients, and ``val_fraction`` of the rest (by patient) is its validation part."""
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    patients = _patients(index, label_column)
    if len(patients) < k:
        raise ValueError(f"{len(patients)} patients cannot fill {k} folds; lower k")
    rng = np.random.default_rng(seed)
    assignment = _assign_groups(patients, k, rng)
    fold_of = index["patient_id"].astype(str).map(assignment).to_numpy()
    positions = np.arange(len(index), dtype=np.int64)
    folds = []
    for f in range(k):
        train, val = _carve_val(positions[fold_of != f], index, label_column, val_fraction, rng)
        folds.append(Fold(train=train, val=val, test=positions[fold_of == f]))
    return folds


def external_split(
    index: pd.DataFrame,
    train_datasets: Sequence[str],
    test_datasets: Sequence[str],
    label_column: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> Fold:
    """Train (and validate) on ``train_datasets``, test on ``test_datasets`` (e.g. Shenzhen ->
    Montgomery). Rows of other datasets are left out."""
    overlap = set(train_datasets) & set(test_datasets)
    if overlap:
        raise ValueError(f"datasets {sorted(overlap)} are both train and test; pick one side")
    known = set(index["dataset"].astype(str))
    unknown = (set(train_datasets) | set(test_datasets)) - known
    if unknown:
        raise ValueError(f"datasets {sorted(unknown)} not in the index; known: {sorted(known)}")
    positions = np.arange(len(index), dtype=np.int64)
    ds = index["dataset"].astype(str)
    pool = positions[ds.isin(list(train_datasets)).to_numpy()]
    rng = np.random.default_rng(seed)
    train, val = _carve_val(pool, index, label_column, val_fraction, rng)
    return Fold(train=train, val=val, test=positions[ds.isin(list(test_datasets)).to_numpy()])
