"""HTML of the metric sections: one bar figure per (run, task) of a split, the published anchors
of that split, and one section per dataset of a pooled external test set (``test:<dataset>``),
titled with the dataset's name."""

from __future__ import annotations

import pandas as pd

from analysis import _html, figures
from analysis.load import RunData
from analysis.reference import (
    PAPER_LABEL,
    PaperReference,
    anchors_for,
    strategy_references,
)
from analysis.tables import dataset_splits

ANCHORS_CAPTION = "Published anchors: published models not trained here, drawn as dashed lines"
ORIGINAL_SIZE_NOTE = (
    "dice and iou are scored at the model's input size; dice_orig and iou_orig per image at "
    "its original size (mean over images), dice_orig_min is the worst image."
)

CUT_NOTE = (
    "accuracy, f1 and mcc count each image at the most probable class (a probability of 0.5 "
    "for two classes), a cut fitted to the training site: where another site's probabilities "
    "sit lower or higher they move although no image is ranked differently. auc depends on no "
    "cut: it is the figure to compare across sites."
)
CUT_METRICS = ("accuracy", "f1", "mcc")


def dataset_name(split: str) -> str:
    """``"montgomery"`` of ``"test:montgomery"``."""
    return split.split(":", 1)[1]


def title(run: str, name: str, many_runs: bool) -> str:
    return f"{run} · {name}" if many_runs else name


def metric_figures(
    data: RunData,
    summary: pd.DataFrame,
    split: str,
    headline: str,
    paper: PaperReference | None,
    anchors: pd.DataFrame,
    prefix: str = "m",
) -> str:
    """One :func:`analysis.figures.metric_figure` per (run, task) of ``summary`` (the
    :func:`analysis.tables.metric_summary` of ``split``), with the published figures of
    ``split``; figure ids ``<prefix>-<run>-<task>``, titles end with the dataset's name when
    ``split`` is one dataset of a pooled test set."""
    many = len(data.runs) > 1
    m = data.metrics
    folds = m[(m["split"] == split) & (m["noise"].fillna("") == "") & (m["fold"] >= 0)]
    suffix = f" · {dataset_name(split)}" if ":" in split and split != headline else ""
    out = []
    for (run, task), g in summary.groupby(["run", "task"], sort=False):
        f = folds[(folds["run"] == run) & (folds["task"] == task)]
        fig = figures.metric_figure(
            g,
            f,
            title(run, task, many) + suffix,
            strategy_references(paper, task, split, headline),
            anchors_for(anchors, task, split),
        )
        out.append(_html.figure(fig, _html.slug(f"{prefix}-{run}-{task}")))
    return "".join(out)


def figures_note(
    paper: PaperReference | None, anchors: pd.DataFrame, split: str, headline: str
) -> str:
    """What the marks of a section's figures mean; diamonds only where some are drawn."""
    anchor_labels = set(anchors["label"])
    diamonds = any(
        label not in anchor_labels
        for task in paper or {}
        for label in strategy_references(paper, task, split, headline)
    )
    return _html.paragraph(
        "Bars: mean over folds with 95% t-interval; dots: one per fold"
        + (f"; diamonds: {PAPER_LABEL} numbers" if diamonds else "")
        + ("; dashed lines: published anchors (table above)" if len(anchors) else "")
        + "."
    )


def anchors_html(anchors: pd.DataFrame, name: str) -> str:
    """The "Published anchors" table of one section; empty when it has none."""
    if anchors.empty:
        return ""
    return _html.table(anchors.reset_index(drop=True), name, ANCHORS_CAPTION)


def dataset_section(
    data: RunData,
    tables: dict[str, pd.DataFrame],
    split: str,
    headline: str,
    paper: PaperReference | None,
) -> tuple[str, str, str]:
    """(anchor, title, HTML) of the section of one dataset of the external test set: its
    per-strategy table, its published anchors and its figures."""
    name = dataset_name(split)
    summary = tables["metric_summary_by_dataset"]
    summary = summary[summary["split"] == split].drop(columns="split")
    table = tables["metrics_by_dataset"]
    table = table[table["split"] == split].drop(columns="split").reset_index(drop=True)
    anchors = tables["anchors"][tables["anchors"]["split"] == split]
    original_size = summary["metric"].str.endswith("_orig").any()
    cut = summary["metric"].isin(CUT_METRICS).any()
    intro = _html.paragraph(
        f"The external test set's {name} images on their own (split {split}); every fold "
        "model scores every image." + (f" {ORIGINAL_SIZE_NOTE}" if original_size else "")
        + (f" {CUT_NOTE}" if cut else "")
    )
    content = (
        intro
        + _html.table(
            table,
            _html.slug(f"metrics-{name}"),
            f"{name}: test metrics per task and strategy, mean ± std [95% CI] over folds, "
            "pooled over folds, and the fold ensemble's [95% bootstrap interval over the images]",
        )
        + anchors_html(anchors, _html.slug(f"anchors-{name}"))
        + figures_note(paper, anchors, split, headline)
        + metric_figures(data, summary, split, headline, paper, tables["anchors"], f"e-{name}")
    )
    return _html.slug(f"metrics-{split}"), f"{name}: metrics per task", content


def headline_section(
    data: RunData, tables: dict[str, pd.DataFrame], split: str, paper: PaperReference | None
) -> str:
    """The headline split's figures, after the anchors of no dataset section (so an anchor
    whose ``split`` the run lacks is still listed, with that split)."""
    datasets = dataset_splits(data.metrics, split)
    anchors = tables["anchors"][~tables["anchors"]["split"].isin(datasets)]
    intro = ""
    if datasets:
        names = ", ".join(dataset_name(s) for s in datasets)
        intro = _html.paragraph(
            f"Split {split}: the external test set's datasets ({names}) pooled; each has its "
            "own section below."
        )
    return (
        intro
        + anchors_html(anchors, "anchors-headline")
        + figures_note(paper, anchors, split, split)
        + metric_figures(data, tables["metric_summary"], split, split, paper, tables["anchors"])
    )
