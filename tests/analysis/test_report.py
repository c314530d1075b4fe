"""The report: self-contained HTML, every figure and table, the CLI, and headless Chromium
(plots render, no JavaScript error, nothing leaves the machine; a screenshot is kept as
``test-artifacts/analysis/report.png``)."""

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from analysis import cli
from analysis.report import TABLE_CAPTIONS, write_report

PAPER = {
    "abnormality": {
        "independent": {"accuracy": 0.86, "f1": 0.83, "mcc": 0.68},
        "baseline": {"accuracy": 0.80},
    }
}


def strip_plotlyjs(html: str) -> str:
    """The report without the inlined plotly.js (whose source mentions URLs it never loads)."""
    js = get_plotlyjs()
    assert html.count(js) == 1, "plotly.js must be inlined exactly once"
    return html.replace(js, "")


def figure_ids(html: str) -> list[str]:
    return re.findall(r'class="report-figure" data-figure="([^"]+)"', html)


def figure_layouts(html: str) -> dict[str, dict]:
    """Each figure's layout, decoded from its ``Plotly.newPlot(id, data, layout, ...)`` call,
    so tests read text the way the browser does, whether plotly wrote it raw (with orjson
    installed) or as \\uXXXX escapes (without)."""
    decoder, layouts = json.JSONDecoder(), {}
    for m in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', html):
        _, end = decoder.raw_decode(html, m.end())
        sep = re.compile(r"\s*,\s*").match(html, end)
        layouts[m.group(1)], _ = decoder.raw_decode(html, sep.end())
    return layouts


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report([run_dir], out, paper_reference=PAPER, tables_dir=out.parent / "tables")
    return out


def test_report_is_self_contained(report):
    rest = strip_plotlyjs(report.read_text())
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", rest, re.I)
    assert "cdn.plot.ly" not in rest and "<link" not in rest
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', rest)) == 6  # the whole gallery


def test_report_has_every_figure_and_table(report):
    html = report.read_text()
    ids = figure_ids(html)
    # metrics + significance per task (2 tasks), one cost, one denoising, 2 sweeps x (parcoords
    # + history), the classification task's ROC curves on the held-out folds and the test set
    assert len(ids) == len(set(ids)) == 12
    assert sum(i.startswith("m-") for i in ids) == 2 and sum(i.startswith("s-") for i in ids) == 2
    assert sum(i.startswith("t-") for i in ids) == 4
    assert sorted(i for i in ids if i.startswith("roc-")) == [
        "roc-cxr-hetero-test-abnormality", "roc-cxr-hetero-val-abnormality"]
    for name in [*TABLE_CAPTIONS, "paper_published"]:
        if name == "across_runs":  # one run: nothing to set beside it, no section, no table
            assert 'id="runs"' not in html and 'download="across_runs.csv"' not in html
            continue
        if name == "roc":  # curve points: drawn, and written beside the others, not printed
            assert 'download="roc.csv"' not in html and 'id="roc"' in html
            continue
        assert f'download="{name}.csv" href="data:text/csv;base64,' in html
    assert "paper (published)" in html
    for name in TABLE_CAPTIONS:
        tex = report.parent / "tables" / f"{name}.tex"
        assert (report.parent / "tables" / f"{name}.csv").is_file()
        if name == "roc":
            assert not tex.exists()
            continue
        assert tex.read_text().startswith("\\begin{table}")


def test_overview_answers_which_strategy_wins(report):
    html = report.read_text()
    overview = html[html.index('id="overview"') : html.index('id="metrics"')]
    assert "best is <b>independent</b>" in overview
    assert "significant" in overview and "% less time" in overview
    # the fixture's joint / alternating stages kept no step times: their head costs say how
    # they were split
    assert "its time shared out evenly, not what one more head adds" in overview


def test_cli_writes_report_and_tables(run_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    ref = tmp_path / "paper.json"
    ref.write_text(json.dumps(PAPER))
    args = parser.parse_args(
        [str(run_dir), "-o", str(tmp_path / "r.html"), "--paper-reference", str(ref)]
    )
    assert cli.run(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.html")
    tables = tmp_path / "r_tables"
    costs = pd.read_csv(tables / "cost_summary.csv")
    assert set(costs["strategy"]) == {"independent", "alternating", "joint"}
    assert json.loads((tables / "mcnemar.json").read_text())[0]["method"]


SIGNIFICANCE_COLUMNS = [
    "task",
    "metric",
    "split",
    "a",
    "b",
    "test",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
    "statistic",
    "p",
    "p_holm",
]


def test_cli_writes_the_significance_table(run_dir, tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([str(run_dir), "-o", str(tmp_path / "r.html"), "--seed", "3"])
    assert cli.run(args) == 0
    sig = pd.read_csv(tmp_path / "r_tables" / "significance.csv")
    assert list(sig.columns) == SIGNIFICANCE_COLUMNS


def test_significance_rows_are_sensible(report, run_dir):
    sig = pd.read_csv(report.parent / "tables" / "significance.csv")
    assert list(sig.columns) == SIGNIFICANCE_COLUMNS
    for task, g in sig.groupby("task"):
        assert set(g["test"]) == {"corrected_t", "bootstrap", "mcnemar"}, task
        # 4 models: 6 pairs in every family, the baseline always second
        assert (g.groupby(["metric", "test"]).size() == 6).all()
        assert "baseline" not in set(g["a"])
    assert set(sig.loc[sig["test"] == "corrected_t", "split"]) == {"val"}
    assert set(sig.loc[sig["test"] != "corrected_t", "split"]) == {"test"}
    assert sig["p"].between(0, 1).all() and sig["p_holm"].between(0, 1).all()
    assert (sig["p_holm"] >= sig["p"] - 1e-12).all()
    np.testing.assert_allclose(sig["diff"], sig["mean_a"] - sig["mean_b"], atol=1e-9)
    ci = sig.dropna(subset=["ci_low"])
    assert (ci["ci_low"] <= ci["diff"] + 1e-12).all() and (
        ci["diff"] <= ci["ci_high"] + 1e-12
    ).all()
    assert ci["test"].isin(["corrected_t", "bootstrap"]).all()
    # the fixture's independent model is right 90% of the time, the baseline 74%
    row = sig.query("task == 'abnormality' and metric == 'accuracy' and test == 'bootstrap'")
    row = row.query("a == 'independent' and b == 'baseline'").iloc[0]
    assert row["ci_low"] > 0
    # corrected t means are the fold means of the run's own val metrics
    m = pd.read_parquet(run_dir / "metrics.parquet")
    m = m[(m["split"] == "val") & (m["task"] == "abnormality") & (m["metric"] == "accuracy")]
    row = sig.query("task == 'abnormality' and metric == 'accuracy' and test == 'corrected_t'")
    row = row.query("a == 'independent' and b == 'baseline'").iloc[0]
    assert row["mean_a"] == pytest.approx(m.loc[m["strategy"] == "independent", "value"].mean())
    assert row["mean_b"] == pytest.approx(m.loc[m["strategy"] == "baseline", "value"].mean())


def test_report_says_what_each_test_answers(report):
    html = report.read_text()
    section = html[html.index('id="significance"') : html.index('id="cost"')]
    for test in ("corrected_t", "bootstrap", "mcnemar"):
        assert f"<li><b>{test}</b>" in section
    assert "Nadeau" in section and 'download="significance.csv"' in section


def test_cli_reports_a_broken_run_folder(make_run, tmp_path, capsys):
    run = make_run(trials=False, samples=False)
    (run / "metrics.parquet").unlink()
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args([str(run), "-o", str(tmp_path / "r.html")])) == 2
    assert "metrics.parquet: missing" in capsys.readouterr().err


def test_report_scales_to_many_strategies_folds_and_runs(make_run, tmp_path):
    runs = [
        make_run(
            name=f"site-{k}",
            n_folds=10,
            strategies=("independent", "alternating", "joint", "joint-learned"),
            trials=False,
            samples=False,
        )
        for k in range(2)
    ]
    out = write_report(runs, tmp_path / "big.html", tables_dir=tmp_path / "big_tables")
    ids = figure_ids(out.read_text())
    # per run: 2 tasks x (metrics + significance) + cost + denoising + the classification
    # task's ROC on the held-out folds and the test set; one figure per task keeps each small
    assert len(ids) == 2 * 8
    titles = {k: v["title"]["text"] for k, v in figure_layouts(out.read_text()).items()}
    assert titles["m-site-0-abnormality"] == "site-0 · abnormality"
    assert titles["roc-site-1-test-abnormality"].startswith("site-1 · abnormality · test<br>")
    # rows of two runs need telling apart: the significance table gains a run column
    sig = pd.read_csv(tmp_path / "big_tables" / "significance.csv")
    assert list(sig.columns) == ["run", *SIGNIFICANCE_COLUMNS]
    assert set(sig["run"]) == {"site-0", "site-1"}
    # two runs: each strategy's figures side by side, against each run's own baseline
    across = pd.read_csv(tmp_path / "big_tables" / "across_runs.csv")
    assert set(across["n_runs"]) == {2}
    joint = across[(across["strategy"] == "joint") & (across["split"] == "test")]
    assert len(joint) and joint["runs_not_worse"].between(0, 2).all()
    assert 'id="runs"' in out.read_text()


# --- headless Chromium ---

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "analysis"
CHROMIUM = next(
    (
        p
        for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if p and Path(p).exists()
    ),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found (apt-get install -y chromium)"
)


def run_chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium with every host unresolvable and a net log in ``tmp/net.json``."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={tmp / 'net.json'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
        *extra,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def page_requests(net_log: Path) -> list[str]:
    """http(s)/ws URLs the page asked for. Chromium's own background requests (initiator 'not an
    origin') are not the page's and are left out."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start
        and re.match(r"(https?|wss?)://", e["params"].get("url", ""))
        and e["params"].get("initiator") != "not an origin"
    ]


@needs_chromium
def test_net_log_check_catches_an_external_request(tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="https://example.com/x.png"></body></html>')
    run_chromium(page, tmp_path, "--dump-dom")
    assert page_requests(tmp_path / "net.json") == ["https://example.com/x.png"]


@needs_chromium
def test_report_renders_offline_without_errors(run_dir, tmp_path):
    report = write_report([run_dir], tmp_path / "report.html", paper_reference=PAPER)
    ids = figure_ids(report.read_text())
    dom = run_chromium(report, tmp_path, "--dump-dom")
    assert "Uncaught" not in dom.stderr, [
        line for line in dom.stderr.splitlines() if "Uncaught" in line
    ]
    assert page_requests(tmp_path / "net.json") == []
    for fig_id in ids:  # each figure drew its SVG (parcoords too: its axes are SVG)
        start = dom.stdout.index(f'data-figure="{fig_id}"')
        end = dom.stdout.find('class="report-figure"', start + 1)
        assert 'class="main-svg"' in dom.stdout[start : end if end > 0 else None], (
            f"{fig_id} did not render"
        )

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    run_chromium(report, tmp_path / "shot", f"--screenshot={shot}", "--window-size=1400,3000")
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_iou_threshold_comes_from_the_run_config_unless_given(tmp_path):
    """evaluation.correct_iou in config.yaml sets McNemar's correctness rule; the CLI flag wins."""
    from analysis.load import RunData
    from analysis.report import ReportOptions, resolve_options

    def data(*values):
        # the shape the runner writes (umsrep.runner.runfolder.write_config)
        cfgs = {f"r{i}": ({"experiment": {"evaluation": {"correct_iou": v}}} if v is not None
                          else {"experiment": {}})
                for i, v in enumerate(values)}
        empty = pd.DataFrame()
        return RunData(empty, empty, empty, empty, empty, configs=cfgs)

    assert resolve_options(data(0.75), ReportOptions()).iou_threshold == 0.75
    assert resolve_options(data(None), ReportOptions()).iou_threshold == 0.9  # older runs
    assert resolve_options(data(0.75), ReportOptions(iou_threshold=0.5)).iou_threshold == 0.5
    assert resolve_options(data(0.6, 0.8), ReportOptions()).iou_threshold == 0.6
