"""The report: run folders -> tables -> one self-contained, offline HTML file."""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from analysis import _html, _metric_html, figures
from analysis.cost import cost_summary, head_costs, stage_costs, time_to_quality
from analysis.environment import environment_section
from analysis.export import export_tables
from analysis.load import RunData, load_runs
from analysis.reference import PaperReference, anchor_table, paper_frame
from analysis.roc import roc_curves
from analysis.significance import significance_table
from analysis.stats import BOOTSTRAP_RESAMPLES, DEFAULT_IOU_THRESHOLD, pairwise_mcnemar
from analysis.tables import (
    DEFAULT_PRIMARY_METRICS,
    across_runs,
    dataset_paper_table,
    dataset_splits,
    dataset_summary,
    denoise_table,
    metric_summary,
    overview_table,
    paper_table,
)

log = logging.getLogger(__name__)

TABLE_CAPTIONS = {
    "overview": "Best strategy per task and its gain over the baseline",
    "metrics": "Test metrics per task and strategy: mean ± std [95% CI] over folds, pooled, and "
    "the fold ensemble's [95% bootstrap interval over the test images] (Tables 3/5/7/9)",
    "metric_summary": "Test metrics per task and strategy (long format)",
    "metrics_by_dataset": "Test metrics per dataset of the external test set, task and strategy: "
    "mean ± std [95% CI] over folds, pooled, and the fold ensemble's [95% bootstrap interval "
    "over the dataset's images]",
    "metric_summary_by_dataset": "Test metrics per dataset, task and strategy (long format)",
    "anchors": "Published anchors: published models not trained here, by task, split and metric",
    "denoising": "Denoising quality per noise level over folds (Table 2)",
    "mcnemar": "McNemar tests, Holm-corrected per task",
    "significance": "Corrected resampled t-tests (val folds), paired bootstraps (test set, pooled "
    "and per dataset) and McNemar tests (test set) of every pair of strategies; Holm-corrected "
    "per task, metric, split and test",
    "cost_stages": "Compute cost per stage (Tables 4/6/8/10)",
    "cost_summary": "Shared approach vs baseline: totals per fold (a stored backbone charged to "
    "every fold), % reduction, marginal cost of one more task, and the whole run (run_*: each "
    "stored backbone once)",
    "head_costs": "One more head, task by task: minutes per fold of each strategy's head for "
    "the task against the task's separate model (a stage training several tasks shared out "
    "by the seconds of each task's training steps, split_by \"step time\", or evenly)",
    "time_to_quality": "Time to the baseline's quality: minutes until a strategy's validation "
    "metric first reaches the converged baseline's best (shared backbone / the baseline's "
    "denoiser included), mean over the folds that reached it",
    "roc": "ROC curves of the binary classification tasks, one row per point: per run, split "
    "(val: held-out images pooled over the folds; test splits: the fold ensemble), task and "
    "strategy, with the curve's AUC",
    "across_runs": "Across the runs of this report (seeds of one experiment, say): each run's "
    "figure (its fold ensemble's, else its mean over folds), their mean, std, min and max; the "
    "mean difference to the same run's baseline and in how many runs the strategy is not "
    "worse than it",
}


@dataclass(frozen=True)
class ReportOptions:
    """split: which predictions/metrics to report; iou_threshold: segmentation correctness for
    McNemar; exact_below: discordant pairs under which McNemar is exact; n_resamples, seed: of
    the paired bootstrap; max_gallery: images shown per gallery kind."""

    split: str = "test"
    iou_threshold: float | None = None  # None: the runs' evaluation.correct_iou
    exact_below: int = 25
    alpha: float = 0.05
    primary_metrics: tuple[str, ...] = DEFAULT_PRIMARY_METRICS
    n_resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = 0
    max_gallery: int = 12


def run_strategies(data: RunData) -> set[str]:
    """Every strategy name the runs trained (the baseline included, the backbone's "" not)."""
    names = pd.concat([data.metrics["strategy"], data.stages["strategy"]]).dropna()
    return {str(s) for s in names} - {""}


def resolve_options(data: RunData, options: ReportOptions) -> ReportOptions:
    """``options`` with ``iou_threshold`` taken from the runs' ``evaluation.correct_iou`` when
    not given (the first run's, with a warning when the runs disagree; the default before it
    was a setting)."""
    if options.iou_threshold is not None:
        return options
    values = [float(((c.get("experiment") or {}).get("evaluation") or {}).get(
        "correct_iou", DEFAULT_IOU_THRESHOLD))
              for c in data.configs.values()] or [DEFAULT_IOU_THRESHOLD]
    if len(set(values)) > 1:
        log.warning("runs use different evaluation.correct_iou %s: the report uses %g; "
                    "pass --iou-threshold to choose", sorted(set(values)), values[0])
    return replace(options, iou_threshold=values[0])


def build_tables(
    data: RunData,
    options: ReportOptions = ReportOptions(),
    paper_reference: PaperReference | None = None,
) -> dict[str, pd.DataFrame]:
    """Every table of the report, by name (the names of :data:`TABLE_CAPTIONS`).

    ``significance`` has the columns of :data:`analysis.significance.COLUMNS`, with a leading
    ``run`` column only when the report covers several runs. ``*_by_dataset`` summarise each
    dataset of a pooled test set (splits ``<split>:<dataset>``); ``anchors`` lists the
    published models of ``paper_reference`` (see :mod:`analysis.reference`).
    """
    options = resolve_options(data, options)
    summary = metric_summary(data.metrics, data.predictions, options.split)
    by_dataset = dataset_summary(data.metrics, data.predictions, options.split)
    tests = pairwise_mcnemar(
        data.predictions, options.split, options.iou_threshold, options.exact_below, options.alpha
    )
    significance = significance_table(
        data.metrics,
        data.predictions,
        tests,
        options.split,
        options.iou_threshold,
        options.n_resamples,
        options.seed,
    )
    if len(data.runs) == 1:
        significance = significance.drop(columns="run")
    return {
        "overview": overview_table(summary, tests, options.primary_metrics),
        "metrics": paper_table(summary),
        "metric_summary": summary,
        "metrics_by_dataset": dataset_paper_table(by_dataset),
        "metric_summary_by_dataset": by_dataset,
        "anchors": anchor_table(paper_reference, run_strategies(data), options.split),
        "denoising": denoise_table(data.metrics, options.split),
        "mcnemar": tests,
        "significance": significance,
        "cost_stages": stage_costs(data.stages),
        "cost_summary": cost_summary(data.stages),
        "head_costs": head_costs(data.stages),
        "time_to_quality": time_to_quality(data.stages, data.curves),
        "across_runs": across_runs(summary, by_dataset, options.split),
        "roc": roc_curves(data.predictions),
    }


def _title(run: str, name: str, many_runs: bool) -> str:
    return _metric_html.title(run, name, many_runs)


def _metric_sections(
    data: RunData, t: dict[str, pd.DataFrame], paper: dict | None, opt: ReportOptions
) -> tuple[str, str]:
    tests, many = t["mcnemar"], len(data.runs) > 1
    bars = _metric_html.headline_section(data, t, opt.split, paper)
    sig = []
    for (run, task), _ in t["metric_summary"].groupby(["run", "task"], sort=False):
        tt = tests[(tests["run"] == run) & (tests["task"] == task)]
        if tt.empty:
            continue
        unit = tt["unit"].iloc[0]
        fig = figures.significance_figure(
            tt, f"{_title(run, task, many)}: McNemar, Holm-corrected (unit: {unit})"
        )
        sig.append(_html.figure(fig, _html.slug(f"s-{run}-{task}")))
    sig_note = _html.paragraph(
        "Pairs are the same test samples (joined on fold and sample id); where every fold model "
        "scores the same images (an external test set) each image counts once, by the fold "
        "ensemble's decision (else the fold models' majority), since McNemar needs independent "
        "pairs. Segmentation: an image is correct "
        f"when its IoU ≥ {opt.iou_threshold:g} (a per-pixel test needs masks, which the run tables do not keep). "
        f"Exact binomial test under {opt.exact_below} discordant pairs, chi-square with continuity correction "
        f"otherwise; * = significant at {opt.alpha:g} after Holm correction within each task."
    )
    return bars, _significance_intro(t, opt) + sig_note + (
        "".join(sig) or _html.paragraph("No paired test predictions.")
    )


def _significance_intro(t: dict[str, pd.DataFrame], opt: ReportOptions) -> str:
    """One sentence per test on the question it answers, then the table of all three."""
    items = [
        "<b>corrected_t</b> (split val): would the difference hold if the whole k-fold "
        "experiment were repeated on new data from the same source (corrected resampled t-test, "
        "Nadeau &amp; Bengio 2003, on the k held-out-fold values, its variance widened by "
        "1/k + n_test/n_train because the folds share training images)?",
        f"<b>bootstrap</b> (split {html.escape(opt.split)}, and each of its datasets, "
        f"{html.escape(opt.split)}:&lt;dataset&gt;): how large is the difference on "
        "this external test set, and how far could it move with another draw of test images "
        f"(paired bootstrap over images, {opt.n_resamples} resamples, seed {opt.seed}, 95% "
        "percentile interval of the mean per-image Dice or IoU, accuracy or AUC difference)?",
        f"<b>mcnemar</b> (split {html.escape(opt.split)}): on the same test images, does one "
        "of these trained models get right significantly more of the images the other gets "
        "wrong (right: the predicted class, or for segmentation an IoU of at least "
        f"{opt.iou_threshold:g})?",
    ]
    return (
        f"<ul>{''.join(f'<li>{i}</li>' for i in items)}</ul>"
        + _html.paragraph(
            "diff = mean_a - mean_b; p_holm is Holm-corrected within each task, metric and "
            "test; the bootstrap has an interval and p but no test statistic; an empty p means "
            "the test could not be computed (fewer than two folds, no spread between folds)."
        )
        + _html.table(t["significance"], "significance", TABLE_CAPTIONS["significance"])
    )


def _overview(t: dict[str, pd.DataFrame]) -> str:
    """Plain sentences: which strategy wins each task, by how much, how surely, at what cost."""
    parts = []
    for r in t["overview"].to_dict("records"):
        if pd.isna(r["baseline"]):
            verdict = "no baseline to compare with"
        else:
            sig = "significant" if r["significant"] else "not significant"
            verdict = (
                f"baseline {r['baseline']:.4g}, gain {r['gain']:+.4g} ({r['gain_pct']:+.2f}%), "
                f'<span class="{"sig" if r["significant"] else ""}">{sig}</span> '
                f"(McNemar, Holm p = {r['p_holm']:.3g}, unit: {html.escape(r['unit'])})"
            )
        parts.append(
            f"<li><b>{html.escape(r['task'])}</b> [{html.escape(r['run'])}]: best is <b>{html.escape(r['best_strategy'])}</b>, "
            f"{html.escape(r['metric'])} {html.escape(r['best'])}; {verdict}</li>"
        )
    for r in t["cost_summary"].to_dict("records"):
        if pd.isna(r["baseline_minutes"]):
            continue
        parts.append(
            f"<li>Cost [{html.escape(r['run'])}], {html.escape(r['strategy'])}: {r['shared_minutes']:.1f} min vs baseline "
            f"{r['baseline_minutes']:.1f} min (<b>{r['time_reduction_pct']:.1f}% less time</b>); {r['shared_params']:,} vs "
            f"{r['baseline_params']:,.0f} trainable parameters (<b>{r['params_reduction_pct']:.1f}% fewer</b>); one more task: "
            f"{r['marginal_shared_minutes']:.2f} min vs {r['marginal_baseline_minutes']:.2f} min; "
            f"the whole run (each stored backbone trained once): {r['run_shared_minutes']:.1f} vs "
            f"{r['run_baseline_minutes']:.1f} min (<b>{r['run_time_ratio']:.2f}x</b>)</li>"
        )
    for (run, strategy), h in t["head_costs"].dropna(subset=["ratio"]).groupby(
            ["run", "strategy"], sort=False):
        each = "; ".join(f"{html.escape(r.task)} {r.head_minutes:.2f} vs {r.model_minutes:.2f} "
                         f"min (<b>{r.ratio:.2f}x</b>)" for r in h.itertuples(index=False))
        by = set(h.loc[h["split"], "split_by"])
        split = ("" if not by else " (one stage trains every task: its time shared out "
                 + ("evenly" if by == {"even"} else "by each task's training steps")
                 + ", not what one more head adds)")
        parts.append(f"<li>One more head [{html.escape(run)}], {html.escape(strategy)}, against "
                     f"the task's separate model: {each}{split}</li>")
    for r in t["time_to_quality"].to_dict("records"):
        reached = (f"{r['shared_minutes']:.1f} min ({r['ratio']:.2f}x the baseline's "
                   f"{r['baseline_minutes']:.1f} min per fold, {r['run_ratio']:.2f}x over the "
                   f"run)" if r["folds_reached"]
                   else f"never (baseline: {r['baseline_minutes']:.1f} min)")
        parts.append(
            f"<li>Time to the baseline's {html.escape(r['task'])} {html.escape(r['metric'])} "
            f"({r['baseline_quality']:.3f}) [{html.escape(r['run'])}], "
            f"{html.escape(r['strategy'])}: {reached}, in {r['folds_reached']} of "
            f"{r['n_folds']} folds</li>"
        )
    return f"<ul>{''.join(parts)}</ul>" + _html.table(
        t["overview"], "overview", TABLE_CAPTIONS["overview"]
    )


def _cost_section(t: dict[str, pd.DataFrame], many: bool) -> str:
    figs = [
        _html.figure(
            figures.cost_figure(c, _title(run, "compute cost: shared vs baseline", many)),
            _html.slug(f"c-{run}"),
        )
        for run, c in t["cost_stages"].groupby("run", sort=False)
    ]
    quality = t["time_to_quality"]
    return "".join(figs) + _html.table(
        t["cost_summary"], "cost_summary", TABLE_CAPTIONS["cost_summary"]
    ) + _html.table(t["head_costs"], "head_costs", TABLE_CAPTIONS["head_costs"]) + (
        _html.table(quality, "time_to_quality", TABLE_CAPTIONS["time_to_quality"])
         if len(quality) else "")


def _roc_section(curves: pd.DataFrame, many: bool) -> str:
    """One ROC figure per run, split and task: held-out folds first, then the test splits."""
    order = sorted(dict.fromkeys(curves["split"]), key=lambda s: (s != "val", s != "test", s))
    out = [_html.paragraph(
        "Binary classification tasks. val: every held-out image scored by the fold model that "
        "held it out, pooled over the folds (the models' scores taken as one scale); test "
        "splits: the fold ensemble. The points are the table roc (roc.csv among the report's "
        "tables).")]
    for split in order:
        for (run, task), g in curves[curves["split"] == split].groupby(["run", "task"],
                                                                        sort=False):
            fig = figures.roc_figure(g, _title(run, f"{task} · {split}", many))
            out.append(_html.figure(fig, _html.slug(f"roc-{run}-{split}-{task}")))
    return "".join(out)


def _denoise_section(t: dict[str, pd.DataFrame], many: bool) -> str:
    return "".join(
        _html.figure(
            figures.denoise_figure(d, _title(run, f"{task}: quality per noise level", many)),
            _html.slug(f"d-{run}-{task}"),
        )
        for (run, task), d in t["denoising"].groupby(["run", "task"], sort=False)
    )


def _sweep_section(data: RunData, many: bool) -> str:
    out = []
    for (run, stage), g in data.trials.groupby(["run", "stage"], sort=False):
        g = g.dropna(axis=1, how="all")
        for k, fig in enumerate(figures.sweep_figures(g, _title(run, f"sweep {stage}", many))):
            out.append(_html.figure(fig, _html.slug(f"t-{run}-{stage}-{k}")))
    return "".join(out)


def _gallery_section(data: RunData, opt: ReportOptions) -> str:
    out = []
    for (run, kind), g in data.samples.groupby(["run", "kind"], sort=False):
        out.append(
            f"<h3>{html.escape(run)} · {html.escape(kind)}</h3>{_html.gallery(g, opt.max_gallery)}"
        )
    return "".join(out)


def render_report(
    data: RunData,
    tables: dict[str, pd.DataFrame],
    paper_reference: dict | None = None,
    options: ReportOptions = ReportOptions(),
) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    options = resolve_options(data, options)
    many = len(data.runs) > 1
    bars, sig = _metric_sections(data, tables, paper_reference, options)
    sections = [
        ("overview", "Overview", _overview(tables)),
        ("metrics", "Metrics per task", bars),
        *(
            _metric_html.dataset_section(data, tables, s, options.split, paper_reference)
            for s in dataset_splits(data.metrics, options.split)
        ),
        *([("roc", "ROC curves", _roc_section(tables["roc"], many))] if len(tables["roc"])
          else []),
        ("significance", "Significance", sig),
        ("cost", "Compute cost", _cost_section(tables, many)),
    ]
    if len(tables["across_runs"]):
        sections.insert(1, ("runs", "Across runs", _html.table(
            tables["across_runs"], "across_runs", TABLE_CAPTIONS["across_runs"])))
    if len(tables["denoising"]):
        sections.append(("denoising", "Denoising per noise level", _denoise_section(tables, many)))
    if len(data.trials):
        sections.append(("sweeps", "Hyperparameter sweeps", _sweep_section(data, many)))
    if len(data.samples):
        sections.append(("galleries", "Galleries (test set)", _gallery_section(data, options)))
    table_html = "".join(
        _html.table(df, name, TABLE_CAPTIONS[name], collapsed=name != "metrics")
        for name, df in tables.items()
        if name not in ("overview", "significance", "across_runs", "roc")
    )
    if paper_reference:
        table_html += _html.table(
            paper_frame(paper_reference, options.split),
            "paper_published",
            f"{figures.PAPER_LABEL} numbers",
            collapsed=True,
        )
    sections.append(("tables", "Tables", table_html))
    sections.append(("environment", "Environment", environment_section(data)))
    body = "".join(_html.section(a, title, content) for a, title, content in sections)
    title = "UMS-Rep report: " + ", ".join(data.runs)
    return _html.page(title, [(a, t) for a, t, _ in sections], body)


def write_report(
    run_dirs: Iterable[str | Path],
    out_html: str | Path,
    paper_reference: dict | None = None,
    options: ReportOptions = ReportOptions(),
    tables_dir: str | Path | None = None,
) -> Path:
    """Write one self-contained HTML report (plotly.js inlined, images as data URIs, no network).

    ``paper_reference`` maps task -> label -> metric -> published value (and optionally
    ``split``): a strategy's numbers are drawn beside ours labelled "paper (published)", any
    other label is a published anchor (:mod:`analysis.reference`). When ``tables_dir`` is
    given, every table is also written there as CSV, JSON and LaTeX. Returns the report's path.
    """
    data = load_runs(run_dirs)
    options = resolve_options(data, options)
    tables = build_tables(data, options, paper_reference)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render_report(data, tables, paper_reference, options), encoding="utf-8")
    tmp.replace(out)
    if tables_dir is not None:
        export_tables(tables, Path(tables_dir), TABLE_CAPTIONS, data_only=("roc",))
    log.info("report written to %s", out)
    return out
