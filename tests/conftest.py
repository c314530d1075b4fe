"""Shared fixtures: one Ray session for the whole test run, and the real sample data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO / ".." / "shared" / "data" / "real").resolve()

os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cluster", action="store_true", default=False,
                     help="also run the multi-node Ray cluster tests (marker `cluster`; "
                          "minutes each, too long for the default run)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--cluster"):
        return
    skip = pytest.mark.skip(reason="multi-node cluster test: run with --cluster -m cluster")
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real sample data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One Ray session (2 CPUs) shared by every test that needs Ray."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # With the dashboard on, Ray Train's state API can clean up stopped trials' workers.
        ray.init(address="local", num_cpus=2, num_gpus=0, log_to_driver=False,
                 configure_logging=False,
                 runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0",
                                           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def runner_run_dir(tmp_path_factory) -> Path:
    """A run folder written by the runner itself (``umsrep train``, no Ray): the tiny runner
    experiment with a *supervised* backbone (pretrained on the lung task, so the backbone has
    lung scores of its own, labelled as the runner labels them), independent and joint heads,
    the separate baseline, two folds. The expected values of the tests that read it come from
    this producer, never from the code under test. About 15 s of CPU."""
    import copy

    import torch

    from tests.runner.conftest import TINY
    from umsrep.experiment import load_experiment
    from umsrep.runner.local import run_local

    cfg = copy.deepcopy(TINY)
    cfg["name"] = "supervised"
    cfg["data"]["cache_dir"] = str(tmp_path_factory.mktemp("runner-cache"))
    cfg["backbone"] = {**cfg["backbone"], "pretrain": "supervised", "task": "lung"}
    cfg["strategies"] = [{"name": "independent"}, {"name": "joint"}]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_local(load_experiment(data=cfg), tmp_path_factory.mktemp("runner-runs"))
    finally:
        torch.set_num_threads(threads)
