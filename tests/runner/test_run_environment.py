"""environment.json: the versions that produced a run, written with the run folder (and again
on a resume that runs other versions), and shown by ``umsrep report``."""

from __future__ import annotations

import importlib.metadata as md
import json
import platform

import torch

from analysis.report import write_report
from tests.analysis.conftest import make_run_folder
from umsrep.runner.environment import FILE, lock_differences, read_lock, write_environment


def test_records_the_versions_this_process_runs(tmp_path):
    path = write_environment(tmp_path)
    assert path == tmp_path / FILE
    env = json.loads(path.read_text())
    assert env["torch"] == torch.__version__  # the real one, build suffix included
    assert env["torch_cuda"] == torch.version.cuda
    assert env["python"] == platform.python_version()
    assert env["ray"] == md.version("ray")
    assert env["umsrep"]["version"] == md.version("umsrep")
    if "commit" in env["umsrep"]:  # run from a git checkout
        assert len(env["umsrep"]["commit"]) == 40 and env["umsrep"]["describe"]
    packages = {k.lower(): v for k, v in env["packages"].items()}
    for name in ("torch", "torchvision", "ray", "optuna", "plotly", "numpy", "pandas"):
        assert packages[name] == md.version(name), name
    assert isinstance(env.get("lock_differences", {}), dict)


def test_a_resume_with_other_versions_writes_a_second_file(tmp_path):
    first = write_environment(tmp_path)
    assert write_environment(tmp_path) == first  # same versions: nothing new
    assert [p.name for p in tmp_path.glob("environment*.json")] == [FILE]
    old = json.loads(first.read_text())
    first.write_text(json.dumps({**old, "torch": "2.4.0"}))
    second = write_environment(tmp_path)
    assert second.name.startswith("environment-resume-")
    assert json.loads(second.read_text())["torch"] == torch.__version__
    assert json.loads(first.read_text())["torch"] == "2.4.0"  # the original record is kept


def test_lock_differences_name_what_is_not_as_pinned(tmp_path):
    lock = tmp_path / "constraints.txt"
    lock.write_text("# comment\nNumPy==2.4.6\nplotly==7.1.0  # note\nray==2.60.0\n")
    pins = read_lock(lock)
    assert pins == {"numpy": "2.4.6", "plotly": "7.1.0", "ray": "2.60.0"}
    installed = {"numpy": "2.4.6", "Plotly": "7.2.0"}
    assert lock_differences(installed, pins) == {
        "plotly": {"lock": "7.1.0", "installed": "7.2.0"},
        "ray": {"lock": "2.60.0", "installed": None},
    }


def test_report_shows_the_recorded_versions(tmp_path):
    run = make_run_folder(tmp_path, name="env-run", n_folds=3, trials=False, samples=False)
    write_environment(run)
    html = write_report([run], tmp_path / "report.html").read_text()
    section = html[html.index('<section id="environment">') :]
    section = section[: section.index("</section>")]
    assert torch.__version__ in section
    assert md.version("ray") in section and platform.python_version() in section
    assert 'download="packages.csv"' in section
