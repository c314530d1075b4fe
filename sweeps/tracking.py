"""MLflow tracking of a sweep (``--mlflow URI`` / ``tracking.mlflow``): one MLflow run per stage
and one per sweep trial, in one MLflow experiment named after the run folder.

Where the logging happens, and why there:

- Live, per validated epoch: Ray's ``MLflowLoggerCallback`` on the Tune runs
  (``sweeps/tracking_tune.py``). Tune callbacks run in the driver, so only the driver writes to
  MLflow: a ``file:`` store needs no shared storage and the Train workers need no MLflow. Ray's
  callback keeps one MLflow run per *Tune trial*; a packed trial trains several stages, so the
  subclass keys runs by the ``stage`` each report names (sweep trials keep one run per trial).
  ``setup_mlflow`` would run inside the Train workers instead: every node would need to reach
  the store, and it always starts a new run, so a resumed stage could not keep its run id.
- Once a wave is over, by the driver from the stage folders (``StageRuns.finish``): the final
  metrics (``metrics.parquet``), the model folder as the ``checkpoint`` artifact, the run
  ended; a stage with no live epochs (a backbone reused from the store, a stage finished before
  tracking was switched on) gets its validation curve from ``result.json``.

``<run>/mlflow.json`` maps each stage (and sweep trial) to its MLflow run id per tracking URI:
``--resume`` reopens the run of an interrupted stage and never logs a finished one again.
Nothing here imports Ray; MLflow and pandas only when a store is used, so that the commands'
``require_mlflow`` check costs nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from umsrep.config import UserError, flatten, to_dict

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[tracking]"'
BOOK = "mlflow.json"  # in the run folder: {tracking URI: {key: {run_id, status, epochs}}}
EPOCH_PREFIXES = ("train/", "val/", "lr/")  # what a stage reports each epoch (and EPOCH_KEYS)
EPOCH_KEYS = ("val_score", "elapsed_s")
_BAD_NAME = re.compile(r"[^/\w.\- ]")  # what MLflow refuses in a param or metric name


def mlflow_installed() -> bool:
    """True when ``mlflow`` (or ``mlflow-skinny``) can be imported; does not import it."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except ValueError:  # a module without a spec stands in for it
        return False


def require_mlflow(uri: str | None) -> None:
    """A ``UserError`` when a tracking URI is set but MLflow is not installed."""
    if uri and not mlflow_installed():
        raise UserError(f"--mlflow {uri}: MLflow is not installed: {INSTALL_HINT}")


def resolve_uri(uri: str) -> str:
    """An absolute ``file://`` URI for ``file:PATH`` or a plain path (relative to the current
    folder, where the command started); any other URI (``http://...``, ``sqlite:///...``,
    ``databricks``) as given."""
    if uri.startswith("file:"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):]
        return Path(path).expanduser().resolve().as_uri()
    if ":" in uri or uri == "databricks":
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def metric_name(*parts: Any) -> str:
    """``parts`` joined by ``/``, each with what MLflow refuses (``:`` in ``test:jsrt``) as ``_``."""
    return "/".join(_BAD_NAME.sub("_", str(p)) for p in parts if p not in (None, ""))


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers a stage reported for one epoch (``train/...``, ``val/...``, ``lr/...``,
    ``val_score``, ``elapsed_s``), without Tune's own bookkeeping (time, host, iteration)."""
    out = {}
    for key, value in result.items():
        if key.startswith(EPOCH_PREFIXES) or key in EPOCH_KEYS:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                out[metric_name(key)] = number
    return out


def leaf_names(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` with each name that is also the folder of another as ``<name>/total``: MLflow's
    file store keeps a metric in a file at its name's path, so ``train/loss`` (the sum) cannot sit
    beside ``train/loss/<task>``."""
    folders = {k[:i] for k in metrics for i, c in enumerate(k) if c == "/"}
    return {f"{k}/total" if k in folders else k: v for k, v in metrics.items()}


def flat_params(d: dict[str, Any], sep: str = ".") -> dict[str, str]:
    """MLflow parameters: nested keys joined by ``sep``, values as text."""
    # 6000: MLflow's limit for a parameter value
    return {metric_name(k): str(v)[:6000] for k, v in flatten(d, sep=sep).items()}


def stage_params(exp, stage, hparams: dict[str, Any]) -> dict[str, str]:
    """What a stage was trained with: its settings with the swept values laid over them."""
    settings = to_dict(exp.backbone.train if stage.kind == "backbone" else exp.train)
    options = next((s.options for s in exp.strategies if s.name == stage.strategy), {})
    return flat_params({
        "tasks": ",".join(stage.tasks), "backbone": exp.backbone.name,
        "backbone_preset": exp.backbone.preset, "backbone_width": exp.backbone.width,
        "image_size": exp.data.image_size, "seed": exp.seed,
        **settings, **({"options": options} if options else {}), **hparams,
    })


def stage_tags(exp, stage, run_dir: Path, run_type: str = "stage") -> dict[str, str]:
    return {"stage": stage.id, "fold": str(stage.fold), "strategy": stage.strategy,
            "kind": stage.kind, "task": stage.task_label, "run_type": run_type,
            "umsrep.experiment": exp.name, "umsrep.run_dir": str(run_dir)}


def describe(exp, stages, run_dir: Path, hparams: dict[str, dict[str, Any]]
             ) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Each stage's MLflow tags and parameters, by stage id (for the Tune callbacks)."""
    return {s.id: (stage_tags(exp, s, run_dir), stage_params(exp, s, hparams.get(s.id, {})))
            for s in stages}


def open_tracking(exp, run_dir: Path) -> StageRuns | None:
    """The run folder's ``StageRuns`` when ``tracking.mlflow`` is set; its MLflow experiment is
    opened now, so a store that cannot be reached stops the run before any training."""
    if not exp.tracking.mlflow:
        return None
    runs = StageRuns(exp.tracking.mlflow, run_dir)
    try:
        runs.experiment_id()
    except Exception as exc:  # MLflow raises many kinds; any of them means no tracking
        raise UserError(f"--mlflow {exp.tracking.mlflow}: cannot open the MLflow store "
                        f"({' '.join(str(exc).split())})") from None
    log.info("MLflow: experiment %r at %s", runs.experiment_name, runs.uri)
    return runs


class StageRuns:
    """The MLflow runs of one run folder, by key (a stage id, or ``sweep/<template>/<trial>``).

    Safe to hold in several places (the driver and the Tune callbacks): the book is read from
    ``<run>/mlflow.json`` on every use. An MLflow error is logged as a warning and never stops
    the sweep.
    """

    def __init__(self, uri: str, run_dir: Path) -> None:
        require_mlflow(uri)
        self.uri = resolve_uri(uri)
        self.run_dir = Path(run_dir)
        self.experiment_name = self.run_dir.name
        if self.uri.startswith("file:"):  # MLflow 3 asks for this before it opens a folder store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks; a client stays
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient  # lazy: MLflow is the [tracking] extra

            self._client = MlflowClient(self.uri)
        return self._client

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            self._experiment_id = found.experiment_id if found else \
                self.client.create_experiment(self.experiment_name)
        return self._experiment_id

    # ------------------------------------------------------------------------- the book
    def entry(self, key: str) -> dict[str, Any] | None:
        from umsrep.runner.store import read_json  # pandas: off the commands' light path

        return ((read_json(self.run_dir / BOOK) or {}).get(self.uri) or {}).get(key)

    def _note(self, key: str, **fields: Any) -> None:
        # lazy: pandas off `umsrep sweep`'s config check
        from umsrep.runner.store import atomic_write_json, read_json

        book = read_json(self.run_dir / BOOK) or {}
        runs = book.setdefault(self.uri, {})
        runs[key] = {**runs.get(key, {}), **fields}
        atomic_write_json(book, self.run_dir / BOOK)

    # ------------------------------------------------------------------------- runs
    def start(self, key: str, name: str, tags: dict[str, str], params: dict[str, str]) -> str:
        """The run of ``key``: the one in the book (reopened if it was ended unfinished), or a
        new one with its tags and parameters."""
        entry = self.entry(key)
        if entry and self._exists(entry["run_id"]):
            if entry.get("status") != "RUNNING":
                self.client.update_run(entry["run_id"], status="RUNNING")
                self._note(key, status="RUNNING")
            return entry["run_id"]
        from mlflow.entities import Param  # lazy: MLflow is the [tracking] extra

        run_id = self.client.create_run(self.experiment_id(), run_name=name,
                                        tags=tags).info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])
        self._note(key, run_id=run_id, status="RUNNING", name=name, epochs=False)
        return run_id

    def log_epoch(self, key: str, step: int, metrics: dict[str, float]) -> None:
        entry = self.entry(key)
        if entry is None or not metrics:
            return
        self._log_metrics(entry["run_id"], metrics, step)
        if not entry.get("epochs"):
            self._note(key, epochs=True)

    def finish(self, key: str, folder: Path, step: int | None = None) -> None:
        """Final metrics, the model folder as the ``checkpoint`` artifact, the run ended; the
        validation curve too when no epoch was logged live."""
        import pandas as pd  # lazy: pandas off `umsrep sweep`'s config check

        from umsrep.runner.store import read_json  # lazy: pandas off `umsrep sweep`'s config check

        entry = self.entry(key)
        if entry is None:
            return
        run_id = entry["run_id"]
        result = read_json(folder / "result.json") or {}
        if not entry.get("epochs"):
            for point in result.get("curve") or []:
                self._log_metrics(run_id, epoch_metrics(point), int(point["epoch"]) + 1)
        if (folder / "metrics.parquet").exists():
            final = {metric_name("final", r.split, r.task, r.metric, r.noise): float(r.value)
                     for r in pd.read_parquet(folder / "metrics.parquet").itertuples()}
            self._log_metrics(run_id, {k: v for k, v in final.items() if math.isfinite(v)},
                              int(step if step is not None else result.get("epochs", 0)))
        checkpoint = Path(result.get("checkpoint") or folder / "checkpoint")
        if checkpoint.is_dir():
            self.client.log_artifacts(run_id, str(checkpoint), artifact_path="checkpoint")
        self.end(key, "FINISHED")

    def end(self, key: str, status: str) -> None:
        entry = self.entry(key)
        if entry is not None and entry.get("status") != status:
            self.client.set_terminated(entry["run_id"], status=status)
            self._note(key, status=status)

    def finish_stages(self, exp, stages, hparams: dict[str, dict[str, Any]]) -> None:
        """After a wave: every done stage's run finished (created if it has none yet), every
        unfinished one's ended FAILED (``--resume`` reopens it); finished ones are left alone."""
        # lazy: pandas off `umsrep sweep`'s config check
        from umsrep.runner.outputs import stage_done

        for stage in stages:
            folder = self.run_dir / "stages" / stage.id
            entry = self.entry(stage.id)
            try:
                if stage_done(folder):
                    if entry and entry.get("status") == "FINISHED":
                        continue
                    self.start(stage.id, stage.id, stage_tags(exp, stage, self.run_dir),
                               stage_params(exp, stage, hparams.get(stage.id, {})))
                    self.finish(stage.id, folder)
                elif entry:
                    self.end(stage.id, "FAILED")
            except Exception as exc:  # tracking never stops the sweep
                log.warning("MLflow (%s): could not record %s: %s", self.uri, stage.id, exc)

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException  # lazy: MLflow is the [tracking] extra

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric  # lazy: MLflow is the [tracking] extra

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in leaf_names(metrics).items()]
        for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=items[i:i + 1000])
