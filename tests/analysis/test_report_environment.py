"""The report's Environment section, from run folders' environment.json (synthetic here; the
runner's own file is tested in tests/runner/test_run_environment.py)."""

from __future__ import annotations

import json

from analysis.environment import environment_tables
from analysis.load import load_runs
from analysis.report import write_report

ENV = {
    "python": "3.11.7",
    "implementation": "CPython",
    "platform": "Linux-x86_64",
    "umsrep": {"version": "0.1.0", "commit": "ab" * 20, "describe": "v0.1-3-gabab", "dirty": False},
    "torch": "2.14.1+cu130",
    "torch_cuda": "13.0",
    "ray": "2.60.0",
    "packages": {"torch": "2.14.1+cu130", "ray": "2.60.0", "plotly": "7.2.0"},
    "lock_differences": {"plotly": {"lock": "7.1.0", "installed": "7.2.0"}},
    "recorded_at": "2026-01-01T00:00:00+00:00",
}


def test_environment_of_each_run_and_resume(make_run, tmp_path):
    a = make_run(name="with", n_folds=3, trials=False, samples=False)
    b = make_run(name="without", n_folds=3, trials=False, samples=False)
    (a / "environment.json").write_text(json.dumps(ENV))
    resumed = {**ENV, "torch": "2.15.0", "packages": {**ENV["packages"], "torch": "2.15.0"}}
    (a / "environment-resume-20260102T000000Z.json").write_text(json.dumps(resumed))

    t = environment_tables(load_runs([a, b]))
    env = t["environment"].set_index("item")
    assert list(env.columns) == ["with", "with (resumed 20260102T000000Z)"]
    assert env.loc["torch", "with"] == "2.14.1+cu130"
    assert env.loc["torch", "with (resumed 20260102T000000Z)"] == "2.15.0"
    assert env.loc["umsrep", "with"] == "v0.1-3-gabab (0.1.0)"
    assert env.loc["against constraints.txt", "with"] == "1 package(s) differ"
    assert set(t["packages"]["package"]) == {"torch", "ray", "plotly"}
    assert t["lock_differences"].to_dict("records")[0]["package"] == "plotly"

    html = write_report([a, b], tmp_path / "r.html").read_text()
    section = html[html.index('<section id="environment">') :]
    assert "2.14.1+cu130" in section and "2.15.0" in section
    assert "No environment.json in without" in section
    for name in ("environment", "lock_differences", "packages"):
        assert f'download="{name}.csv"' in section


def test_no_environment_recorded(run_dir):
    t = environment_tables(load_runs([run_dir]))
    assert t["environment"].empty and t["packages"].empty and t["lock_differences"].empty
