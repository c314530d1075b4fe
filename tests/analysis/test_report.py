"""The report: self-contained HTML, every figure and table, the CLI, and headless Chromium
(plots render, no JavaScript error, nothing leaves the machine; a screenshot is kept as
``test-artifacts/analysis/report.png``)."""

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

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
    # metrics + significance per task (2 tasks), one cost, one denoising, 2 sweeps x (parcoords + history)
    assert len(ids) == len(set(ids)) == 10
    assert sum(i.startswith("m-") for i in ids) == 2 and sum(i.startswith("s-") for i in ids) == 2
    assert sum(i.startswith("t-") for i in ids) == 4
    for name in [*TABLE_CAPTIONS, "paper_published"]:
        assert f'download="{name}.csv" href="data:text/csv;base64,' in html
    assert "paper (published)" in html
    for name in TABLE_CAPTIONS:
        assert (report.parent / "tables" / f"{name}.tex").read_text().startswith("\\begin{table}")


def test_overview_answers_which_strategy_wins(report):
    html = report.read_text()
    overview = html[html.index('id="overview"') : html.index('id="metrics"')]
    assert "best is <b>independent</b>" in overview
    assert "significant" in overview and "% less time" in overview


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
    out = write_report(runs, tmp_path / "big.html")
    ids = figure_ids(out.read_text())
    # per run: 2 tasks x (metrics + significance) + cost + denoising; one figure per task keeps each small
    assert len(ids) == 2 * 6
    assert "site-0 · abnormality" in out.read_text()


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
