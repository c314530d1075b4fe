"""Published figures shown beside ours: an experiment's ``paper_reference``.

``paper_reference`` maps task -> label -> {metric: value}. A label that is one of the run's
strategies (independent, alternating, joint, baseline, ...) holds that strategy's published
figures, drawn as diamonds on its bar. Any other label is an *anchor*: a published model we did
not train (``unet_montgomery_binseg: {dice: 0.942}``), drawn as a horizontal line labelled
"<label> (published)" in the task's panel of that metric and listed in a "Published anchors"
table. An entry may say which split its figures belong to, ``split: "test:montgomery"`` (a
string, not a metric), so it is shown in the section of that dataset; without it, it belongs to
the report's headline split. ``minutes`` and ``trainable_params`` are cost figures, not quality
figures: they stay in the paper table and make no anchor.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import pandas as pd

PAPER_LABEL = "paper (published)"
PUBLISHED = "(published)"
SPLIT_KEY = "split"
COST_FIELDS = ("minutes", "trainable_params")
ANCHOR_COLUMNS = ["task", "label", "split", "metric", "value"]

PaperReference = Mapping[str, Mapping[str, Mapping[str, float | str]]]


def anchor_name(label: str) -> str:
    """How an anchor is labelled in figures: ``"unet_jsrt_binseg (published)"``."""
    return f"{label} {PUBLISHED}"


def reference_split(values: Mapping[str, float | str], headline: str) -> str:
    """The split an entry's figures belong to: its ``split`` key, else the headline split."""
    split = values.get(SPLIT_KEY)
    return split if isinstance(split, str) and split else headline


def published_values(values: Mapping[str, float | str]) -> dict[str, float]:
    """An entry's numeric figures, by metric (its ``split`` key left out)."""
    return {
        m: float(v)
        for m, v in values.items()
        if m != SPLIT_KEY and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def strategy_references(
    paper: PaperReference | None, task: str, split: str, headline: str
) -> dict[str, dict[str, float]]:
    """label -> metric -> value of every entry of ``task`` that belongs to ``split``; the
    figure draws those whose label is one of its strategies."""
    return {
        label: published_values(values)
        for label, values in ((paper or {}).get(task) or {}).items()
        if reference_split(values, headline) == split
    }


def anchor_table(
    paper: PaperReference | None, strategies: Collection[str], headline: str
) -> pd.DataFrame:
    """One row per anchor figure (columns :data:`ANCHOR_COLUMNS`): entries whose label is not
    one of ``strategies``, their cost figures left out; ``split`` filled in (see module doc)."""
    rows = [
        {"task": task, "label": label, "split": reference_split(values, headline)}
        | {"metric": metric, "value": value}
        for task, by_label in (paper or {}).items()
        for label, values in (by_label or {}).items()
        if label not in strategies
        for metric, value in published_values(values).items()
        if metric not in COST_FIELDS
    ]
    return pd.DataFrame(rows, columns=ANCHOR_COLUMNS)


def anchors_for(anchors: pd.DataFrame, task: str, split: str) -> dict[str, dict[str, float]]:
    """label -> metric -> value of the anchors of one task and split."""
    out: dict[str, dict[str, float]] = {}
    rows = anchors[(anchors["task"] == task) & (anchors["split"] == split)]
    for r in rows.itertuples(index=False):
        out.setdefault(r.label, {})[r.metric] = float(r.value)
    return out


def paper_frame(paper: PaperReference, headline: str) -> pd.DataFrame:
    """Every published figure, one row each: task, strategy (the label), split, metric, value,
    source."""
    rows = [
        {"task": task, "strategy": label, "split": reference_split(values, headline)}
        | {"metric": metric, "value": value, "source": PAPER_LABEL}
        for task, by_label in paper.items()
        for label, values in (by_label or {}).items()
        for metric, value in published_values(values).items()
    ]
    return pd.DataFrame(rows, columns=["task", "strategy", "split", "metric", "value", "source"])
