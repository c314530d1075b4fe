"""A pooled external test set (Montgomery + JSRT): one report section per dataset with its
table, figures and published anchors, and paired bootstraps on each dataset's images."""

import argparse
import json
import re

import pandas as pd
import pytest

from analysis import cli
from tests.analysis.conftest import CLS, SEG, make_run_folder

DATASETS = ("jsrt", "montgomery")
RUN = "cxr-hetero"  # the fixture's run name; figure ids are <section>-<run>-<task>
PAPER = {
    SEG: {
        "independent": {"dice": 0.96},  # a strategy: a diamond on its bar, not an anchor
        "unet_montgomery_binseg": {"dice": 0.942, "split": "test:montgomery"},
        "unet_jsrt_binseg": {"dice": 0.945, "split": "test:jsrt"},
        "unet_pooled": {"dice": 0.95, "iou": 0.9},  # no split: the headline section
    },
    "denoise": {"shared": {"minutes": 302.2}},  # a cost figure: no anchor
}


def figure_specs(html: str) -> dict[str, tuple[list, dict]]:
    """Each figure's (data, layout), decoded from its ``Plotly.newPlot(id, data, layout, ...)``
    call as the browser reads it, whichever JSON escaping plotly used."""
    decoder, specs = json.JSONDecoder(), {}
    for m in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', html):
        data, end = decoder.raw_decode(html, m.end())
        sep = re.compile(r"\s*,\s*").match(html, end)
        specs[m.group(1)] = (data, decoder.raw_decode(html, sep.end())[0])
    return specs


def section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start : html.index("</section>", start)]


def anchor_lines(layout: dict) -> dict[str, float]:
    """Annotation text -> the y of the dashed line it labels."""
    lines = [s for s in layout.get("shapes", []) if s.get("line", {}).get("dash") == "dash"]
    texts = [a["text"] for a in layout.get("annotations", []) if "(published)" in a["text"]]
    assert len(lines) == len(texts)
    return dict(zip(texts, [s["y0"] for s in lines], strict=True))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The CLI's report of a run whose config.yaml carries the published figures."""
    root = tmp_path_factory.mktemp("datasets")
    run = make_run_folder(
        root, RUN, datasets=DATASETS, paper_reference=PAPER, trials=False, samples=False
    )
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = root / "report.html"
    args = parser.parse_args([str(run), "-o", str(out), "--bootstrap-resamples", "500"])
    assert cli.run(args) == 0
    return run, out, out.parent / "report_tables"


def test_one_section_per_dataset_between_metrics_and_significance(report):
    _, out, _ = report
    html = out.read_text()
    order = [
        html.index(f'<section id="{a}">')
        for a in ("metrics", "metrics-test-jsrt", "metrics-test-montgomery", "significance")
    ]
    assert order == sorted(order)
    for name in DATASETS:
        part = section(html, f"metrics-test-{name}")
        assert f"<h2>{name}: metrics per task</h2>" in part
        assert f'download="metrics-{name}.csv"' in part  # its per-strategy table
        assert f'data-figure="e-{name}-{RUN}-{SEG.replace("_", "-")}"' in part
        assert f'data-figure="e-{name}-{RUN}-{CLS}"' in part


def test_each_anchor_is_listed_and_drawn_in_its_own_section(report):
    _, out, _ = report
    html = out.read_text()
    specs = figure_specs(html)
    seg = f"{RUN}-{SEG.replace('_', '-')}"
    for name, other in (("montgomery", "jsrt"), ("jsrt", "montgomery")):
        part = section(html, f"metrics-test-{name}")
        assert f"unet_{name}_binseg" in part and f"unet_{other}_binseg" not in part
        assert 'download="anchors-' in part
        data, layout = specs[f"e-{name}-{seg}"]
        assert layout["title"]["text"] == f"{SEG} · {name}"
        value = PAPER[SEG][f"unet_{name}_binseg"]["dice"]
        assert anchor_lines(layout) == {f"unet_{name}_binseg (published): {value:.4g}": value}
        # the line lies in the dice panel: the y axis of the panel titled "dice"
        panels = [a["text"] for a in layout["annotations"] if "(published)" not in a["text"]]
        shape = next(s for s in layout["shapes"] if s.get("line", {}).get("dash") == "dash")
        dice_axis = panels.index("dice") + 1
        assert shape["yref"].replace(" domain", "") == ("y" if dice_axis == 1 else f"y{dice_axis}")
        assert anchor_lines(specs[f"e-{name}-{RUN}-{CLS}"][1]) == {}
        assert "paper (published)" not in {t.get("name") for t in data}
    headline = section(html, "metrics")
    assert "unet_pooled" in headline and "binseg" not in headline
    data, layout = specs[f"m-{seg}"]
    assert set(anchor_lines(layout)) == {
        "unet_pooled (published): 0.95",
        "unet_pooled (published): 0.9",
    }
    diamonds = [t for t in data if t.get("name") == "paper (published)"]
    assert [(d["x"], d["y"]) for d in diamonds] == [(["independent"], [0.96])]


def test_anchor_table_lists_published_models_not_strategies_or_costs(report):
    _, _, tables = report
    anchors = pd.read_csv(tables / "anchors.csv")
    got = set(anchors[["task", "label", "split", "metric", "value"]].itertuples(index=False))
    assert got == {
        (SEG, "unet_montgomery_binseg", "test:montgomery", "dice", 0.942),
        (SEG, "unet_jsrt_binseg", "test:jsrt", "dice", 0.945),
        (SEG, "unet_pooled", "test", "dice", 0.95),
        (SEG, "unet_pooled", "test", "iou", 0.9),
    }


def test_dataset_tables_summarise_each_datasets_own_images(report):
    run, _, tables = report
    preds = pd.read_parquet(run / "predictions.parquet")
    summary = pd.read_csv(tables / "metric_summary_by_dataset.csv")
    assert set(summary["split"]) == {"test:jsrt", "test:montgomery"}
    for name in DATASETS:
        p = preds[(preds["split"] == f"test:{name}") & (preds["task"] == SEG)]
        p = p[p["strategy"] == "independent"]
        assert p["sample_id"].nunique() == 20  # half of the fixture's 40 test images
        row = summary.query(
            f"split == 'test:{name}' and task == '{SEG}' and strategy == 'independent' "
            "and metric == 'dice'"
        ).iloc[0]
        per_fold = p.groupby("fold")["score"].mean()
        assert row["n_folds"] == 5
        assert row["mean"] == pytest.approx(per_fold.mean())
        assert row["std"] == pytest.approx(per_fold.std(ddof=1))
        assert row["pooled"] == pytest.approx(p["score"].mean())  # mean over images
    wide = pd.read_csv(tables / "metrics_by_dataset.csv")
    assert list(wide.columns[:4]) == ["run", "split", "task", "strategy"]
    assert len(wide) == 2 * 2 * 4  # datasets x tasks x (3 strategies + baseline)


def test_bootstraps_run_on_each_dataset(report):
    run, _, tables = report
    sig = pd.read_csv(tables / "significance.csv")
    boot = sig[sig["test"] == "bootstrap"]
    assert set(boot["split"]) == {"test", "test:jsrt", "test:montgomery"}
    for split, g in boot.groupby("split"):
        # 4 models: 6 pairs for dice, iou (segmentation), accuracy, auc (classification)
        assert (g.groupby(["task", "metric"]).size() == 6).all(), split
        assert set(g["metric"]) == {"dice", "iou", "accuracy", "auc"}, split
    assert set(sig.loc[sig["test"] == "mcnemar", "split"]) == {"test"}
    # each dataset's mean is over its own images: every fold model's Dice, equally weighted
    preds = pd.read_parquet(run / "predictions.parquet")
    for split in ("test:jsrt", "test:montgomery"):
        row = boot.query(
            f"split == '{split}' and task == '{SEG}' and metric == 'dice' "
            "and a == 'independent' and b == 'baseline'"
        ).iloc[0]
        p = preds[(preds["split"] == split) & (preds["task"] == SEG)]
        assert row["mean_a"] == pytest.approx(p.loc[p["strategy"] == "independent", "score"].mean())
        assert row["mean_b"] == pytest.approx(p.loc[p["strategy"] == "baseline", "score"].mean())
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]


def test_a_dataset_section_with_accuracy_says_that_a_cut_counts_it(report):
    """accuracy, f1 and mcc of another site depend on the training site's 0.5 cut: each
    dataset section with them says so, and that auc is the figure no cut enters."""
    from html import escape

    from analysis._metric_html import CUT_NOTE

    _, out, _ = report
    html = out.read_text()
    for name in DATASETS:
        part = section(html, f"metrics-test-{name}")
        assert "accuracy" in part and escape(CUT_NOTE) in part
