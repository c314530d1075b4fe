"""A relative cache or run folder on several nodes is refused before the run starts; in a
submitted job's working directory it is warned about; a local run is left alone."""

from __future__ import annotations

import pytest

from sweeps.storage import storage_problems


def test_a_local_run_may_use_relative_folders():
    assert storage_problems(".umsrep/cache", "runs", nodes=1, job_working_dir=False) == ([], [])


def test_absolute_folders_are_fine_on_any_cluster():
    assert storage_problems("/mnt/shared/cache", "/mnt/shared/runs", nodes=4,
                            job_working_dir=True) == ([], [])


def test_relative_folders_on_several_nodes_are_errors():
    errors, warnings = storage_problems(".umsrep/cache", "runs", nodes=3, job_working_dir=True)
    assert warnings == [] and len(errors) == 2
    assert "data.cache_dir '.umsrep/cache'" in errors[0] and "other 2 node(s)" in errors[0]
    assert "--set data.cache_dir=/mnt/shared/cache" in errors[0]
    assert "--output 'runs'" in errors[1] and "--output /mnt/shared/runs" in errors[1]


def test_relative_folders_in_a_one_node_job_are_warnings():
    errors, warnings = storage_problems("~/cache", "runs", nodes=1, job_working_dir=True)
    assert errors == [] and len(warnings) == 1  # ~ expands to an absolute path
    assert "the run folder is left in this job's copy" in warnings[0]
    _, warnings = storage_problems("cache", "/abs/runs", nodes=1, job_working_dir=True)
    assert "stored backbones are not reused by the next job" in warnings[0]


@pytest.mark.ray
def test_the_driver_refuses_a_relative_cache_on_several_nodes(monkeypatch, tmp_path):
    """``check_storage`` reads the alive nodes from Ray and raises before any stage runs."""
    from sweeps import driver
    from tests.runner.conftest import TINY
    from umsrep.experiment import load_experiment

    exp = load_experiment(data={**TINY, "data": {**TINY["data"], "cache_dir": "rel/cache"}})
    monkeypatch.setattr(driver.ray, "nodes", lambda: [{"Alive": True}, {"Alive": True},
                                                      {"Alive": False}])

    class Context:
        runtime_env: dict = {}

    monkeypatch.setattr(driver.ray, "get_runtime_context", lambda: Context())
    with pytest.raises(driver.StorageError, match="other 1 node"):
        driver.check_storage(exp, tmp_path / "runs")
    monkeypatch.setattr(driver.ray, "nodes", lambda: [{"Alive": True}])
    driver.check_storage(exp, tmp_path / "runs")  # one node, no job: nothing to say
