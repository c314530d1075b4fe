"""Which configuration a sweep keeps when it searched several objectives (``search.objectives``).

Optuna's multi-objective sampler returns no single best trial, only a Pareto front: the trials
that no other trial matches or beats on every objective while beating them on one. The sweep
keeps one front trial, the one whose ranks over the objectives (1 = best among all trials of the
sweep) add up to the least: a trial good on every objective before one that excels on one and
trails on the others. Ties go to the better value of the first objective, then to the earlier
trial. ``best.json`` lists the whole front beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def pareto_front(values: np.ndarray) -> list[int]:
    """Rows of ``values`` [trials, objectives] (larger is better in every column) that no other
    row matches or beats on every column while beating them on one."""
    front = []
    for i, row in enumerate(values):
        dominated = ((values >= row).all(axis=1) & (values > row).any(axis=1)).any()
        if not dominated:
            front.append(i)
    return front


def pareto_choice(values: pd.DataFrame, modes: Sequence[str]) -> tuple[int, list[int]]:
    """``(chosen, front)``: positions in ``values`` (one row per trial, one column per
    objective, ``modes`` ``min``/``max`` per column) of the kept trial and of the Pareto front.
    A trial missing a value (it failed, or never reported one) takes no part."""
    if len(modes) != values.shape[1]:
        raise ValueError(f"{values.shape[1]} objectives but {len(modes)} modes")
    sign = np.array([1.0 if m == "max" else -1.0 for m in modes])
    better = values.to_numpy(dtype=float) * sign  # larger is better in every column
    valid = np.flatnonzero(np.isfinite(better).all(axis=1))
    if not len(valid):
        raise ValueError(f"no trial reported every objective ({', '.join(values.columns)})")
    front = [int(valid[i]) for i in pareto_front(better[valid])]
    ranks = pd.DataFrame(better[valid]).rank(ascending=False, method="min").sum(axis=1)
    rank_of = dict(zip(valid.tolist(), ranks.tolist(), strict=True))
    chosen = min(front, key=lambda i: (rank_of[i], -better[i, 0], i))
    return chosen, front
