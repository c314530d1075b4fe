"""Plotly figures for the report: one figure per (run, task) or per run, so the report stays
readable at 4 strategies x 10 folds x 5 tasks. Every builder returns a ``go.Figure``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis.reference import PAPER_LABEL, anchor_name
from analysis.tables import order_strategies
from umsrep.schema import BASELINE

_BASELINE_COLOR = "#7f7f7f"
# Tune bookkeeping columns that are not a metric to plot.
_BOOKKEEPING = {
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "done",
    "time_since_restore",
    "iterations_since_restore",
    "timesteps_total",
    "episodes_total",
    "timesteps_since_restore",
    "fold",
    "epoch",
    "node_ip",
    "date",
    "hostname",
}


def strategy_colors(strategies: list[str]) -> dict[str, str]:
    palette = qualitative.Plotly
    others = [s for s in strategies if s != BASELINE]
    colors = {s: palette[i % len(palette)] for i, s in enumerate(others)}
    colors[BASELINE] = _BASELINE_COLOR
    return colors


def metric_figure(
    summary: pd.DataFrame,
    fold_values: pd.DataFrame,
    title: str,
    paper: dict[str, dict[str, float]] | None = None,
    anchors: dict[str, dict[str, float]] | None = None,
) -> go.Figure:
    """Bars of the fold mean per strategy with 95% CI error bars and the per-fold values as
    points, one panel per metric. ``summary``/``fold_values`` hold one task's rows; ``paper``
    maps strategy -> metric -> the published value, drawn as labelled diamonds; ``anchors``
    maps a published model we did not train -> metric -> value, drawn as a dashed horizontal
    line labelled "<label> (published)" (see :mod:`analysis.reference`)."""
    metrics = list(dict.fromkeys(summary["metric"]))
    strategies = list(dict.fromkeys(summary["strategy"]))
    colors = strategy_colors(strategies)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics, horizontal_spacing=0.06)
    paper_shown = False
    for col, metric in enumerate(metrics, start=1):
        s = (
            summary[summary["metric"] == metric]
            .set_index("strategy")
            .reindex(strategies)
            .dropna(subset=["mean"])
        )
        fig.add_bar(
            x=s.index,
            y=s["mean"],
            marker_color=[colors[k] for k in s.index],
            name="mean (95% CI)",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (s["ci_high"] - s["mean"]).fillna(0),
                "arrayminus": (s["mean"] - s["ci_low"]).fillna(0),
            },
            showlegend=col == 1,
            legendgroup="mean",
            row=1,
            col=col,
            hovertemplate="%{x}: %{y:.4f}<extra>mean over folds</extra>",
        )
        f = fold_values[fold_values["metric"] == metric]
        fig.add_scatter(
            x=f["strategy"],
            y=f["value"],
            mode="markers",
            name="per fold",
            legendgroup="fold",
            marker={"color": "black", "size": 5, "opacity": 0.6},
            showlegend=col == 1,
            row=1,
            col=col,
            customdata=f["fold"],
            hovertemplate="%{x} fold %{customdata}: %{y:.4f}<extra></extra>",
        )
        published = {
            k: v[metric] for k, v in (paper or {}).items() if metric in v and k in strategies
        }
        if published:
            fig.add_scatter(
                x=list(published),
                y=list(published.values()),
                mode="markers",
                name=PAPER_LABEL,
                legendgroup="paper",
                showlegend=not paper_shown,
                row=1,
                col=col,
                marker={
                    "symbol": "diamond-open",
                    "size": 12,
                    "color": "crimson",
                    "line": {"width": 2},
                },
            )
            paper_shown = True
        _add_anchor_lines(fig, anchors, metric, col)
    fig.update_layout(title=title, height=380, bargap=0.3, margin={"t": 70, "b": 40})
    return fig


def _add_anchor_lines(
    fig: go.Figure, anchors: dict[str, dict[str, float]] | None, metric: str, col: int
) -> None:
    """One dashed line per anchor with a figure for ``metric`` in panel ``col``; labels
    alternate above-left and below-right so two close values (0.942, 0.945) stay readable."""
    lines = [(label, v[metric]) for label, v in (anchors or {}).items() if metric in v]
    for k, (label, value) in enumerate(lines):
        fig.add_hline(
            y=value,
            row=1,
            col=col,
            line={"dash": "dash", "color": "crimson", "width": 1.5},
            annotation_text=f"{anchor_name(label)}: {value:.4g}",
            annotation_position="top left" if k % 2 == 0 else "bottom right",
            annotation_font={"size": 10, "color": "crimson"},
        )


def significance_figure(tests: pd.DataFrame, title: str) -> go.Figure:
    """Symmetric matrix of Holm-corrected McNemar p-values for one task; '*' marks p < 0.05."""
    names = order_strategies([*tests["a"], *tests["b"]])
    idx = {n: i for i, n in enumerate(names)}
    p = np.full((len(names), len(names)), np.nan)
    text = np.full(p.shape, "", dtype=object)
    for r in tests.itertuples():
        for i, j in ((idx[r.a], idx[r.b]), (idx[r.b], idx[r.a])):
            p[i, j] = r.p_holm
            text[i, j] = f"{r.p_holm:.3g}{'*' if r.significant else ''}"
    fig = go.Figure(
        go.Heatmap(
            z=p,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            zmin=0,
            zmax=1,
            colorscale="RdBu",
            colorbar={"title": "Holm p"},
            hoverongaps=False,
            hovertemplate="%{y} vs %{x}: Holm p = %{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(title=title, height=320 + 30 * len(names), yaxis={"autorange": "reversed"})
    return fig


def cost_figure(costs: pd.DataFrame, title: str) -> go.Figure:
    """Stacked bars per approach (each strategy's shared backbone + heads, and the baseline's
    separate models): training minutes and trainable parameters."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["training time (minutes, mean over folds)", "trainable parameters"],
    )
    shared = costs[costs["approach"] == "shared"]
    backbone = shared[shared["kind"] == "backbone"]
    columns: list[tuple[str, pd.DataFrame]] = [
        (f"shared: {s}", pd.concat([backbone, heads]))
        for s, heads in shared[shared["kind"] == "head"].groupby("strategy", sort=False)
    ]
    base = costs[costs["approach"] == "baseline"]
    if len(base):
        columns.append((BASELINE, base))
    stages = list(dict.fromkeys(pd.concat([c for _, c in columns])["stage"])) if columns else []
    palette = qualitative.Set2 + qualitative.Pastel
    for k, stage in enumerate(stages):
        xs = [name for name, c in columns if stage in set(c["stage"])]
        rows = [c[c["stage"] == stage].iloc[0] for _, c in columns if stage in set(c["stage"])]
        for col, field in ((1, "minutes"), (2, "trainable_params")):
            fig.add_bar(
                x=xs,
                y=[r[field] for r in rows],
                name=stage,
                legendgroup=stage,
                marker_color=palette[k % len(palette)],
                showlegend=col == 1,
                row=1,
                col=col,
            )
    fig.update_layout(
        title=title, barmode="stack", height=420, legend={"orientation": "h", "y": -0.2}
    )
    return fig


def roc_figure(curves: pd.DataFrame, title: str) -> go.Figure:
    """ROC curves of one (run, split, task) of :func:`analysis.roc.roc_curves`: one line per
    strategy, its AUC in the legend, the chance diagonal dashed; hover gives the threshold."""
    colors = strategy_colors(list(dict.fromkeys(curves["strategy"])))
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", hoverinfo="skip",
                    line={"color": "#bbbbbb", "dash": "dash", "width": 1})
    for strategy, g in curves.groupby("strategy", sort=False):
        fig.add_scatter(
            x=g["fpr"],
            y=g["tpr"],
            mode="lines",
            name=f"{strategy} (AUC {g['auc'].iloc[0]:.3f})",
            line={"color": colors[strategy]},
            customdata=g["threshold"],
            hovertemplate="FPR %{x:.2f}, TPR %{y:.2f}, threshold %{customdata:.3f}",
        )
    first = curves.iloc[0]
    fig.update_layout(
        title=f"{title}<br><sup>{first['source']}: {first['n']} images, "
              f"{first['positives']} positive</sup>",
        height=460,
        xaxis={"title": "false positive rate (1 - specificity)", "range": [-0.01, 1.01],
               "constrain": "domain"},
        yaxis={"title": "true positive rate (sensitivity)", "range": [-0.01, 1.01],
               "scaleanchor": "x", "constrain": "domain"},
    )
    return fig


def denoise_figure(table: pd.DataFrame, title: str) -> go.Figure:
    """Denoising quality per noise level, one panel per metric, one line per model."""
    metrics = list(dict.fromkeys(table["metric"]))
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    colors = strategy_colors(list(dict.fromkeys(table["strategy"])))
    for col, metric in enumerate(metrics, start=1):
        for strategy, g in table[table["metric"] == metric].groupby("strategy", sort=False):
            fig.add_scatter(
                x=g["noise"],
                y=g["mean"],
                mode="lines+markers",
                name=strategy,
                legendgroup=strategy,
                line={"color": colors[strategy]},
                showlegend=col == 1,
                row=1,
                col=col,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (g["ci_high"] - g["mean"]).fillna(0),
                    "arrayminus": (g["mean"] - g["ci_low"]).fillna(0),
                },
            )
    fig.update_layout(title=title, height=360)
    return fig


def pick_sweep_metric(trials: pd.DataFrame) -> tuple[str, str] | None:
    """(column, "min" | "max") of the reported metric to plot: the first numeric non-config,
    non-bookkeeping column, preferring one named like a loss (minimised)."""
    candidates = [
        c
        for c in trials.columns
        if not c.startswith("config/")
        and c not in _BOOKKEEPING | {"run", "stage"}
        and pd.api.types.is_numeric_dtype(trials[c])
        and trials[c].notna().any()
    ]
    # umsrep's sweeps optimise val_score (mean of each task's main validation metric, maximised)
    if "val_score" in candidates:
        return "val_score", "max"
    validation = [c for c in candidates if c.startswith("val") and "loss" in c.lower()]
    if validation:
        return validation[0], "min"
    losses = [c for c in candidates if "loss" in c.lower()]
    if losses:
        return losses[0], "min"
    return (candidates[0], "max") if candidates else None


def sweep_figures(trials: pd.DataFrame, title: str) -> list[go.Figure]:
    """Parallel coordinates (numeric hyperparameters -> metric) and the optimisation history
    (metric per trial and best so far) of one Tune stage; empty when nothing can be plotted."""
    picked = pick_sweep_metric(trials)
    if picked is None:
        return []
    metric, mode = picked
    t = trials.dropna(subset=[metric]).reset_index(drop=True)
    params = [
        c
        for c in t.columns
        if c.startswith("config/") and pd.api.types.is_numeric_dtype(t[c]) and t[c].nunique() > 1
    ]
    figs = []
    if params:
        dims = [{"label": c.removeprefix("config/"), "values": t[c]} for c in params]
        dims.append({"label": metric, "values": t[metric]})
        figs.append(
            go.Figure(
                go.Parcoords(
                    line={"color": t[metric], "colorscale": "Viridis", "showscale": True},
                    dimensions=dims,
                ),
                layout={"title": f"{title}: hyperparameters vs {metric}", "height": 380},
            )
        )
    best = t[metric].cummin() if mode == "min" else t[metric].cummax()
    hist = go.Figure(
        layout={
            "title": f"{title}: optimisation history",
            "height": 320,
            "xaxis": {"title": "trial"},
            "yaxis": {"title": metric},
        }
    )
    hist.add_scatter(x=t.index, y=t[metric], mode="markers", name=metric)
    hist.add_scatter(x=t.index, y=best, mode="lines", name=f"best so far ({mode})")
    figs.append(hist)
    return figs
