"""MLflow tracking (``--mlflow URI`` / ``tracking.mlflow``): a real sweep logs one MLflow run per
stage and per sweep trial into a ``file:`` store, read back through MLflow's client; a resumed
run keeps the run ids; without MLflow installed the option is refused in one line."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "sweeps" / "demo.yaml"
HINT = 'pip install -e ".[tracking]"'


def ray_smoke_experiment() -> dict:
    """``SMOKE`` of tests/ray/conftest.py: the smallest experiment that runs Ray Train + Tune."""
    spec = importlib.util.spec_from_file_location("_ray_smoke", REPO / "tests/ray/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return copy.deepcopy(module.SMOKE)


# ----------------------------------------------------------------------------- no MLflow
@pytest.mark.parametrize("argv", [
    ["sweep", str(DEMO), "--mlflow", "file:./mlruns"],
    ["sweep", str(DEMO), "--set", "tracking.mlflow=file:./mlruns"],
    ["demo", "--mlflow", "file:./mlruns"],
], ids=["sweep --mlflow", "sweep tracking.mlflow", "demo --mlflow"])
def test_without_mlflow_the_option_is_refused_in_one_line(argv, monkeypatch, capsys, tmp_path):
    import sweeps.driver
    from umsrep.cli import main

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed

    def never(*args, **kwargs):
        raise AssertionError("the experiment ran instead of being refused")

    monkeypatch.setattr(sweeps.driver, "run_experiment", never)
    assert main([*argv, "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --mlflow file:./mlruns: MLflow is not installed: {HINT}"]


def test_file_uris_become_absolute_and_others_stay(monkeypatch, tmp_path) -> None:
    from sweeps.tracking import resolve_uri

    monkeypatch.chdir(tmp_path)
    assert resolve_uri("file:./mlruns") == (tmp_path / "mlruns").as_uri()
    assert resolve_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    assert resolve_uri(f"file://{tmp_path}/x") == (tmp_path / "x").as_uri()
    assert resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


# ----------------------------------------------------------------------------- the book
def test_an_unfinished_stage_keeps_its_run_when_resumed(monkeypatch, tmp_path) -> None:
    pytest.importorskip("mlflow", reason="the tracking extra")
    from mlflow.tracking import MlflowClient

    from sweeps.tracking import StageRuns

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    run_dir = tmp_path / "demo-20260101-000000"
    run_dir.mkdir()
    first = StageRuns(uri, run_dir)
    run_id = first.start("f0-joint", "f0-joint", {"stage": "f0-joint"}, {"lr": "0.001"})
    first.log_epoch("f0-joint", 1, {"val/loss": 0.9})
    first.end("f0-joint", "FAILED")  # the driver was stopped mid-stage

    again = StageRuns(uri, run_dir)  # --resume: a new driver, the same run folder
    assert again.start("f0-joint", "f0-joint", {"stage": "f0-joint"}, {"lr": "0.001"}) == run_id
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    again.log_epoch("f0-joint", 2, {"val/loss": 0.7})
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [1, 2]
    assert len(client.search_runs([again.experiment_id()])) == 1
    book = json.loads((run_dir / "mlflow.json").read_text())
    assert book[uri]["f0-joint"]["run_id"] == run_id


# ----------------------------------------------------------------------------- a real sweep
@pytest.mark.ray
@pytest.mark.slow
def test_sweep_logs_stages_and_trials_to_mlflow_and_resume_keeps_them(
        ray_session, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason="the tracking extra")
    from mlflow.tracking import MlflowClient

    from sweeps.driver import run_experiment
    from umsrep.experiment import load_experiment

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)  # file:./mlruns is relative to where the command starts
    cfg = ray_smoke_experiment()
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    # two stages packed into one Train run (per-stage runs from one trial) and a 1-trial sweep
    cfg["strategies"] = [{"name": "joint"}, {"name": "independent"}]
    cfg["search"]["num_samples"] = 1
    cfg["resources"]["max_concurrent"] = 1
    cfg["tracking"] = {"mlflow": "file:./mlruns"}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exp = load_experiment(path)
    run_dir = run_experiment(exp, tmp_path / "runs", report=False)

    client = MlflowClient((tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(run_dir.name)
    runs = client.search_runs([experiment.experiment_id])
    stages = {r.data.tags["stage"]: r for r in runs if r.data.tags["run_type"] == "stage"}
    trials = [r for r in runs if r.data.tags["run_type"] == "sweep_trial"]
    assert sorted(stages) == sorted(p.name for p in (run_dir / "stages").iterdir())
    assert sorted(stages) == ["f0-independent-abnormal", "f0-joint"]
    assert len(trials) == 1 and trials[0].data.tags["stage"] == "f0-joint"
    assert "lr" in trials[0].data.params and "val/abnormal/accuracy" in trials[0].data.metrics
    chosen = json.loads((run_dir / "hparams.json").read_text())["joint"]["lr"]
    for stage_id, run in stages.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["fold"] == "0" and run.data.tags["kind"] == "head"
        assert run.data.params["tasks"] == "abnormal" and run.data.params["epochs"] == "2"
        history = client.get_metric_history(run.info.run_id, "val/abnormal/accuracy")
        assert [m.step for m in history] == [1, 2], stage_id  # both epochs
        # logged live from the Tune results (result.json has no training loss)
        live = client.get_metric_history(run.info.run_id, "train/loss/total")
        assert [m.step for m in live] == [1, 2], stage_id
        assert "final/test/abnormal/accuracy" in run.data.metrics
        files = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert {"checkpoint/model.pt", "checkpoint/model.json"} <= files
    assert float(stages["f0-joint"].data.params["lr"]) == pytest.approx(chosen)
    assert stages["f0-joint"].data.tags["strategy"] == "joint"
    # Ray's own TensorBoard files are still written beside the Tune trials
    assert list((run_dir / "ray_tune").glob("*/*/events.out.tfevents.*"))

    # --resume of the finished run: the same runs, nothing logged twice
    assert run_experiment(exp, tmp_path / "runs", resume=run_dir, report=False) == run_dir
    again = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in runs)
    joint = stages["f0-joint"].info.run_id
    assert len(client.get_metric_history(joint, "val/abnormal/accuracy")) == 2
    book = json.loads((run_dir / "mlflow.json").read_text())
    assert {k: v["run_id"] for k, v in book[(tmp_path / "mlruns").as_uri()].items()
            if not k.startswith("sweep/")} == {k: r.info.run_id for k, r in stages.items()}
