import pandas as pd
import pytest
import yaml

from analysis.load import RunFolderError, load_runs


def test_loads_tables_with_run_column(run_dir):
    data = load_runs([run_dir])
    assert data.runs == ["cxr-hetero"]
    for df in (data.stages, data.metrics, data.predictions, data.trials, data.samples):
        assert len(df) and set(df["run"]) == {"cxr-hetero"}
    assert set(data.trials["stage"]) == {"independent-abnormality", "joint"}
    assert all(p.endswith(".png") for p in data.samples["file"])


def test_two_runs_are_told_apart(make_run):
    a, b = make_run(name="a", n_folds=3), make_run(name="b", n_folds=4, trials=False, samples=False)
    data = load_runs([a, b])
    assert data.metrics.groupby("run")["fold"].max().to_dict() == {"a": 2, "b": 3}


def test_missing_column_names_file_and_column(make_run):
    run = make_run()
    path = run / "predictions.parquet"
    pd.read_parquet(path).drop(columns=["sample_id"]).to_parquet(path)
    with pytest.raises(
        RunFolderError, match=r"predictions\.parquet: missing column\(s\) sample_id"
    ):
        load_runs([run])


def test_missing_file_is_named(make_run):
    run = make_run(trials=False, samples=False)
    (run / "stages.parquet").unlink()
    with pytest.raises(RunFolderError, match=r"stages\.parquet: missing"):
        load_runs([run])


def test_other_schema_version_is_refused(make_run):
    run = make_run(trials=False, samples=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "schema_version": 99}))
    with pytest.raises(RunFolderError, match=r"config\.yaml: schema_version is 99"):
        load_runs([run])


def test_missing_sample_png_is_dropped_with_warning(make_run, caplog):
    run = make_run(trials=False)
    (run / "samples" / "denoise-0.png").unlink()
    data = load_runs([run])
    assert len(data.samples) == 5
    assert "denoise-0.png" in caplog.text
