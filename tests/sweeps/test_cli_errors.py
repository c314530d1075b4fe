"""User errors on the command line: one line ``error: ...`` on stderr, exit status 2, no
traceback; a bad experiment file is refused within 5 seconds (before Ray or torch is imported).

Each case runs the real command in a subprocess, as a user would.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "sweeps"
LIMIT_S = 5.0  # issue 13: a bad experiment file costs seconds, not a trained backbone


def run_command(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                         timeout=timeout)
    return out, time.perf_counter() - start


def assert_user_error(out: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = out.stderr.splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in out.stderr + out.stdout
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic demo with a typo in a head name (no data needed)."""
    data = yaml.safe_load((SWEEPS / "demo.yaml").read_text())
    seg = next(t for t in data["tasks"] if t["kind"] == "segmentation")
    seg["head"] = "seg_cdea"
    path = tmp_path_factory.mktemp("bad") / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "command",
    [("-m", "umsrep", "sweep"), ("-m", "umsrep", "train"), ("-m", "sweeps.run")],
    ids=["umsrep sweep", "umsrep train", "python -m sweeps.run"],
)
def test_a_bad_experiment_file_exits_2_with_one_line_within_5_s(command, bad_file) -> None:
    out, elapsed = run_command(*command, str(bad_file), "--output", str(bad_file.parent))
    line = assert_user_error(out, f"error: {bad_file}: tasks[", "].head: unknown head 'seg_cdea'",
                             "did you mean 'seg_cdae'?")
    assert elapsed < LIMIT_S, f"{elapsed:.1f} s to refuse a bad file: {line}"


def test_a_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ntasks: [\n  - {name: a\n")
    out, elapsed = run_command("-m", "umsrep", "sweep", str(path))
    assert_user_error(out, f"error: {path}: line ", "not valid YAML")
    assert elapsed < LIMIT_S


@pytest.mark.parametrize(
    ("setting", "fragments"),
    [("folds.kk=3", ("folds.kk: unknown key",)),
     ("data.fit=crop", ("data.fit: 'crop' is not one of",)),
     ("folds.k", ("--set folds.k: expected KEY=VALUE",))],
    ids=["unknown key", "bad value", "no value"],
)
def test_a_bad_set_option_is_one_line(setting: str, fragments: tuple[str, ...]) -> None:
    out, _ = run_command("-m", "umsrep", "train", str(SWEEPS / "demo.yaml"), "--set", setting)
    assert_user_error(out, *fragments)


def test_a_missing_data_path_asks_for_data_root(tmp_path: Path) -> None:
    data = yaml.safe_load((SWEEPS / "demo.yaml").read_text())
    data["data"]["test"] = [{"manifest": "nowhere/manifest.parquet"}]
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump(data))
    out, _ = run_command("-m", "umsrep", "sweep", str(path))
    assert_user_error(out, "data.test[0].manifest:", "does not exist", "--data-root")


@pytest.mark.parametrize("command", [("-m", "umsrep", "demo"), ("-m", "umsrep", "train",
                                     str(SWEEPS / "demo.yaml"))], ids=["demo", "train"])
def test_an_unreadable_resume_folder_is_one_line(command, tmp_path: Path) -> None:
    out, elapsed = run_command(*command, "--resume", str(tmp_path / "nowhere"))
    assert_user_error(out, "nowhere: --resume needs an existing run folder")
    assert elapsed < LIMIT_S
    (tmp_path / "not_a_run").mkdir()
    out, _ = run_command(*command, "--resume", str(tmp_path / "not_a_run"))
    assert_user_error(out, "config.yaml", "missing")


def test_report_of_an_unreadable_run_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("experiment: [\n")
    for run_dir, fragment in [(tmp_path / "nowhere", "not a folder"),
                              (tmp_path / "run", "not valid YAML")]:
        out, _ = run_command("-m", "umsrep", "report", str(run_dir), "-o",
                             str(tmp_path / "r.html"), timeout=300)
        assert_user_error(out, str(run_dir), fragment)
