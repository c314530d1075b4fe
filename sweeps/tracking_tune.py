"""Ray's ``MLflowLoggerCallback`` with one MLflow run per stage (why: ``sweeps/tracking.py``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from sweeps.tracking import StageRuns, epoch_metrics, flat_params

log = logging.getLogger(__name__)

# a stage's MLflow tags and parameters (sweeps.tracking.stage_tags / stage_params), by stage id
Described = dict[str, tuple[dict[str, str], dict[str, str]]]


class StageMLflowCallback(MLflowLoggerCallback):
    """Logs a Tune run's results to MLflow as they arrive, in the driver.

    Ray's callback sets the MLflow experiment up (``setup``) and is called at each trial's
    start, result and end; where it would open one MLflow run per trial, this one keys runs
    through ``StageRuns``: by the ``stage`` each result names in a wave (a packed trial trains
    several stages; the driver finishes their runs once the wave is over), by trial in a sweep
    (``sweep`` = the swept template; its runs are finished here, from the trial's folder).
    """

    def __init__(self, runs: StageRuns, described: Described, sweep: str | None = None,
                 reserved: tuple[str, ...] = ()) -> None:
        super().__init__(tracking_uri=runs.uri, experiment_name=runs.experiment_name)
        self.runs, self.described, self.sweep = runs, described, sweep
        self.reserved = set(reserved)  # trial config keys that are no hyperparameter
        self._open: set[str] = set()  # keys whose run this callback has started

    def setup(self, *args, **kwargs) -> None:
        super().setup(*args, **kwargs)
        self._open = set()  # also after Tuner.restore unpickled this callback

    def _key(self, trial, result: dict[str, Any] | None = None) -> str | None:
        if self.sweep is not None:
            return f"sweep/{self.sweep}/{trial.trial_id}"
        stage = (result or {}).get("stage")
        return stage if stage in self.described else None

    def _start(self, key: str, trial) -> None:
        if key in self._open:
            return
        if self.sweep is None:
            tags, params = self.described[key]
            self.runs.start(key, key, tags, params)
        else:
            tags, params = self.described[trial.config["stage_id"]]
            chosen = {k: v for k, v in trial.config.items() if k not in self.reserved}
            self.runs.start(key, f"sweep-{self.sweep}-{trial.trial_id}",
                            {**tags, "run_type": "sweep_trial", "trial_id": trial.trial_id},
                            {**params, **flat_params(chosen, sep="/")})
        self._open.add(key)

    def log_trial_start(self, trial) -> None:
        if self.sweep is not None:
            self._guard(self._start, self._key(trial), trial)

    def log_trial_result(self, iteration: int, trial, result: dict[str, Any]) -> None:
        key = self._key(trial, result)
        if key is None:
            return

        def log() -> None:
            self._start(key, trial)
            self.runs.log_epoch(key, int(result.get("epoch") or iteration), epoch_metrics(result))

        self._guard(log)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if self.sweep is None:  # the driver finishes stage runs after the wave
            return
        key = self._key(trial)
        folder = self.runs.run_dir / "tune" / self.sweep / "trials" / trial.trial_id
        if failed:
            self._guard(self.runs.end, key, "FAILED")
        else:
            self._guard(self.runs.finish, key, Path(folder))
        self._open.discard(key)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # tracking never stops the sweep
            log.warning("MLflow (%s): %s", self.runs.uri, exc)
