"""The Ray layer: Tune trials that each launch a TorchTrainer.

- The plan's waves run one after the other. Inside a wave, with ``resources.pack`` (default), as
  many trials as can run at once each start one TorchTrainer that pulls stages from the wave's
  ``StageQueue`` actor, longest-expected first, until it is empty: Ray Train's worker start-up
  (~15-25 s on a small CPU machine) is paid once per trial rather than once per stage, and a
  run that finishes early takes the next stage. Without packing, every stage is a trial of one
  Tuner (``grid_search`` over stage ids).
- Before the cross-validation waves, each searched stage template (``joint``,
  ``independent-<task>``, ``baseline-<task>``, ...) is swept on fold 0 with OptunaSearch (seeded)
  + ASHA; the best trial on **validation** data is used for every fold.
- After the last wave the driver scores the fold ensembles in its own process (inference only,
  ``umsrep/runner/ensemble.py``); one whose folder has ``result.json`` is never scored again.
- Resume: a stage whose folder has ``result.json`` is never rerun; a sweep with ``best.json`` is
  never rerun, and an unfinished one is restored with ``Tuner.restore``; a stage interrupted
  mid-training restarts from its last epoch checkpoint (same Train ``RunConfig`` name).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna.distributions as od
import pandas as pd
import ray
import ray.train
import ray.tune
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from ray.util.placement_group import PlacementGroup, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweeps.pareto import pareto_choice
from sweeps.storage import storage_problems
from sweeps.tracking import describe, open_tracking
from sweeps.worker import LAST_REPORT, train_loop_per_worker
from umsrep.config import flatten, to_dict
from umsrep.experiment import Experiment, ParamSpace
from umsrep.runner.ensemble import run_ensembles
from umsrep.runner.local import PreparedRun, prepare_run
from umsrep.runner.outputs import stage_done
from umsrep.runner.plan import Stage
from umsrep.runner.runfolder import compose_tables
from umsrep.runner.stage import run_stage
from umsrep.runner.store import atomic_write_json, atomic_write_parquet, read_json

log = logging.getLogger(__name__)

# the keys of a trial's config that are no hyperparameter (the rest are a sweep's sample)
RESERVED = ("stage_id", "pack", "queue", "wave", "pack_size", "threads")


def template_of(stage: Stage) -> str:
    """A stage's id without its fold: the unit a sweep tunes (e.g. ``independent-lung``)."""
    return stage.id.split("-", 1)[1]


# ----------------------------------------------------------------------------- entry
def run_experiment(exp: Experiment, output: Path, resume: Path | None = None,
                   address: str | None = None, num_gpus: int | None = None, report: bool = True,
                   fault_injection: dict | None = None) -> Path:
    """Run ``exp`` on Ray (a local session, or the cluster at ``address`` / RAY_ADDRESS) into a
    new run folder under ``output`` (or finish ``resume``); then write its report."""
    owned = not ray.is_initialized() and not address
    init_ray(address, num_gpus=num_gpus)
    check_storage(exp, Path(output))
    device = "cuda" if exp.resources.use_gpu else "cpu"
    run = prepare_run(exp, Path(output), resume=resume, device=device)
    log.info("run folder: %s", run.run_dir)
    try:
        run_dir = RayDriver(run, exp, fault_injection=fault_injection).run_all()
    finally:
        if owned:
            ray.shutdown()
    if report:
        write_report(run_dir, exp.paper_reference or None)
    return run_dir


def check_storage(exp: Experiment, output: Path) -> None:
    """Refuse a relative cache or run folder on a cluster of several nodes; warn about one in a
    submitted job's working directory (``sweeps.storage``)."""
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    job_dir = bool((ray.get_runtime_context().runtime_env or {}).get("working_dir"))
    errors, warnings = storage_problems(exp.data.cache_dir, output, nodes, job_dir)
    for line in warnings:
        log.warning("%s", line)
    if errors:
        raise StorageError("; ".join(errors))


class StorageError(RuntimeError):
    """A path the run needs on every node is not on storage every node sees."""


def write_report(run_dir: Path, paper_reference: dict | None = None) -> Path | None:
    try:
        from analysis.report import write_report as _write  # lazy: Plotly, for a report only
    except ImportError as exc:  # the analysis package is optional for a sweep
        log.warning("no report: %s", exc)
        return None
    out = run_dir / "report.html"
    _write([run_dir], out, paper_reference=paper_reference)
    log.info("report: %s", out)
    return out


# ----------------------------------------------------------------------------- trials
@dataclasses.dataclass(frozen=True)
class Setup:
    """What every trial of a run shares; given to the trial functions once, through the object
    store (``tune.with_parameters``), so a trial's config holds only what differs between
    trials (a stage id, a pack, a sweep's sample) and Tune's status table stays readable."""

    experiment: dict[str, Any]
    run_dir: str
    store_dir: str
    stages: dict[str, dict[str, Any]]  # stage id -> dataclasses.asdict(Stage)
    resources: dict[str, Any]
    hparams: dict[str, dict[str, Any]]  # stage id -> its template's best sweep values
    # tests: crash a Train worker once ({"stage", "epoch", "marker"}), or drop one report as Ray
    # Train can ({"stage", "epoch", "lose_report": true})
    fault_injection: dict[str, Any] | None = None

    def loop_config(self, threads: int | None) -> dict[str, Any]:
        """What ``train_loop_per_worker`` needs for any stage of the run."""
        res = self.resources
        return {"experiment": self.experiment, "run_dir": self.run_dir,
                "store_dir": self.store_dir, "use_gpu": res["use_gpu"],
                "threads": int(threads or max(1, round(res["cpus_per_worker"]))),
                "fault_injection": self.fault_injection,
                # each fold's backbone store key as planned: no worker hashes the pool again
                "backbone_keys": {str(d["fold"]): d["store_key"] for d in self.stages.values()
                                  if d["kind"] == "backbone" and d.get("store_key")}}


def make_trainer(setup: Setup, loop_config: dict[str, Any], name: str,
                 stages: int = 1) -> TorchTrainer:
    """The TorchTrainer of one trial: ``resources.num_workers`` workers running
    ``train_loop_per_worker``, its checkpoints under ``<run>/ray_train/<name>``, its reports
    forwarded to the Tune trial. ``stages``: how many stages it may train (a pack), each with
    its own budget of lost workers."""
    res = setup.resources
    resources = {"CPU": res["cpus_per_worker"]}
    if res["use_gpu"]:
        resources["GPU"] = res["gpus_per_worker"]
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=res["num_workers"], use_gpu=res["use_gpu"],
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(Path(setup.run_dir) / "ray_train"),
            failure_config=ray.train.FailureConfig(max_failures=res["max_failures"] * stages,
                                                   controller_failure_limit=3),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )


def fit_trial(setup: Setup, loop_config: dict[str, Any], name: str, stages: int = 1) -> None:
    """Fit the trial's TorchTrainer (``make_trainer``); then hand Tune the last report if Ray
    Train lost it (``report_lost_final``): rank 0 writes each report to
    ``<run>/ray_train/<name>/last_report.json`` (``loop_config["last_report"]``) as well."""
    copy = Path(setup.run_dir) / "ray_train" / name / LAST_REPORT
    # a Train run name comes back after a driver restart or --resume: an earlier attempt's copy
    # must not stand for this one's reports
    copy.unlink(missing_ok=True)
    result = make_trainer(setup, {**loop_config, "last_report": str(copy)}, name, stages).fit()
    report_lost_final(result.metrics, copy)


def report_lost_final(seen: dict[str, Any] | None, copy: Path,
                      report: Callable[[dict[str, Any]], None] | None = None) -> bool:
    """Hand Tune a trial's last report when Ray Train lost it; True when it did.

    Ray Train 2.60 (the version pinned; read in its source) can drop a worker's last
    ``ray.train.report``: its status poll reads the worker's result queue (empty), the training
    thread then reports and returns, and the poll finds a finished worker with nothing to send
    (Ray's ``Worker.poll_status`` notes the missing two-phase commit).
    ``TuneReportCallback`` never forwards that epoch: a sweep trial whose only epoch it was ends
    without the searched metric, and Tune stops the whole sweep ("Trial returned a result which
    did not include the specified metric(s)"); a stage's last epoch goes missing from the
    tracking callbacks. ``copy``: rank 0's last payload, written before it was reported;
    ``seen``: the Train result's metrics (its last reported checkpoint's; rank 0 reports the
    validated epochs and the last, each with a checkpoint). When the two name another stage or
    epoch, the copy is reported to Tune here, from the trial's own thread. (Should the epoch
    before it still wait in ``TuneReportCallback``'s one-item queue, Tune could see the two out
    of order: a whole epoch separates them, and only the last one matters to a search.)
    """
    last = read_json(copy)
    seen = seen or {}
    if last is None or all(seen.get(k) == last.get(k) for k in ("stage", "epoch")):
        return False
    log.warning("%s: Ray Train lost the report of epoch %s (its result ends at %s %s); "
                "reported to Tune here", last.get("stage"), last.get("epoch"),
                seen.get("stage"), seen.get("epoch"))
    (report or ray.tune.report)(last)
    return True


def stage_trial(config: dict[str, Any], setup: Setup) -> None:
    """Tune function of a wave without packing: one stage (``stage_id``), one TorchTrainer."""
    stage = setup.stages[config["stage_id"]]
    loop = {**setup.loop_config(config.get("threads")), "stage": stage,
            "hparams": setup.hparams.get(stage["id"], {}),
            "out_dir": str(Path(setup.run_dir) / "stages" / stage["id"])}
    fit_trial(setup, loop, stage["id"])


def pack_trial(config: dict[str, Any], setup: Setup) -> None:
    """Tune function of a packed wave: one TorchTrainer that trains stages from the wave's
    ``StageQueue`` (``queue``) until it is empty."""
    loop = {**setup.loop_config(config.get("threads")), "queue": config["queue"],
            "pack": config["pack"], "stages": setup.stages, "hparams": setup.hparams}
    fit_trial(setup, loop, f"wave{config['wave']}-pack{config['pack']}",
              stages=int(config["pack_size"]))


def sweep_trial(config: dict[str, Any], setup: Setup) -> None:
    """Tune function of a sweep: the stage ``stage_id`` with the trial's sample (the config's
    other keys) over the stage's stored values, in its own folder
    ``<run>/tune/<template>/trials/<trial id>``."""
    stage = setup.stages[config["stage_id"]]
    trial_id = ray.tune.get_context().get_trial_id()
    template = template_of(Stage(**_stage_args(stage)))
    loop = {**setup.loop_config(config.get("threads")), "stage": stage,
            "hparams": {**setup.hparams.get(stage["id"], {}),
                        **flatten({k: v for k, v in config.items() if k not in RESERVED})},
            "out_dir": str(Path(setup.run_dir) / "tune" / template / "trials" / trial_id)}
    fit_trial(setup, loop, f"sweep-{template}-{trial_id}")


def expected_cost(stage: Stage) -> float:
    """A rough relative training cost, to start the longest stages first in a packed wave.

    Randomly initialised separate models train longest (early stopping lets them run on);
    stages that train the encoder on every task come next; a frozen-backbone head is cheapest.
    """
    if stage.kind == "backbone":
        return 4.0
    if stage.kind == "baseline":
        return 3.0
    return 2.0 if stage.strategy != "independent" else 1.0


def _stage_args(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "tasks": tuple(d["tasks"]), "deps": tuple(d["deps"])}


# ----------------------------------------------------------------------------- driver
class StageQueue:
    """Hands out a wave's stages to packs (a Ray actor: ``ray.remote(StageQueue)``).

    ``get(pack, k)`` is pack ``pack``'s k-th stage id (None when the queue is empty): the first
    call for a k takes the next pending stage, later calls (other ranks, a restarted worker)
    get the same answer.
    """

    def __init__(self, stage_ids: list[str]) -> None:
        self.pending = list(stage_ids)
        self.given: dict[int, list[str]] = {}

    def get(self, pack: int, k: int) -> str | None:
        seq = self.given.setdefault(int(pack), [])
        while len(seq) <= k and self.pending:
            seq.append(self.pending.pop(0))
        return seq[k] if k < len(seq) else None


class RayDriver:
    def __init__(self, run: PreparedRun, exp: Experiment,
                 fault_injection: dict[str, Any] | None = None) -> None:
        self.run, self.exp = run, exp
        self.fault_injection = fault_injection  # tests: crash a Train worker once
        self.run_dir = run.run_dir
        self.hparams_path = self.run_dir / "hparams.json"
        self.hparams: dict[str, dict[str, Any]] = read_json(self.hparams_path) or {}
        self.tracking = open_tracking(exp, self.run_dir)  # MLflow (sweeps/tracking.py) or None

    def setup(self) -> Setup:
        return Setup(
            experiment=self.exp.to_dict(), run_dir=str(self.run_dir),
            store_dir=str(self.run.ctx.store_dir),
            stages={s.id: dataclasses.asdict(s) for s in self.run.plan.stages},
            resources=to_dict(self.exp.resources),
            hparams=self.stage_hparams(self.run.plan.stages),
            fault_injection=self.fault_injection,
        )

    def trainable(self, fn):
        """``fn`` as Tune runs it: the run's ``Setup`` bound once, the trial's resources."""
        return tune.with_resources(tune.with_parameters(fn, setup=self.setup()),
                                   self.trial_resources())

    def stage_hparams(self, stages: list[Stage]) -> dict[str, dict[str, Any]]:
        """Each stage's swept values (its template's best configuration; empty when unswept)."""
        return {s.id: self.hparams.get(template_of(s), {}) for s in stages}

    def tracking_callbacks(self, stages: list[Stage], sweep: str | None = None) -> list:
        """The MLflow Tune callback of a wave (or of ``sweep``), when tracking is on."""
        if self.tracking is None:
            return []
        from sweeps.tracking_tune import StageMLflowCallback  # lazy: MLflow, the [tracking] extra

        described = describe(self.exp, stages, self.run_dir, self.stage_hparams(stages))
        return [StageMLflowCallback(self.tracking, described, sweep=sweep,
                                    reserved=RESERVED)]

    def trial_resources(self) -> dict[str, float]:
        """What one Tune trial (a TorchTrainer's driver) asks Ray for: ``cpus_per_trial`` and
        the experiment's ``resources.trial_resources`` (e.g. a resource only the head has)."""
        r = self.exp.resources
        return {"cpu": r.cpus_per_trial, **r.trial_resources}

    def concurrency(self) -> int:
        r = self.exp.resources
        if r.max_concurrent:
            return r.max_concurrent
        cpus = ray.cluster_resources().get("CPU", 1.0)
        per = r.cpus_per_trial + r.num_workers * r.cpus_per_worker
        n = max(1, int(cpus // per))
        if r.use_gpu:
            gpus = ray.cluster_resources().get("GPU", 0.0)
            n = min(n, max(1, int(gpus // (r.num_workers * r.gpus_per_worker))))
        return n

    def threads(self, running: int) -> int:
        """Intra-op threads per Train worker when ``running`` Train runs share the machine.

        A worker uses the CPUs it was given (rounded, at least 1); when fewer runs than the
        machine has room for are running (a wave of one stage, the tail of a wave), the idle
        share is spread over the running ones, never beyond one node's CPUs.
        """
        r = self.exp.resources
        own = max(1, round(r.cpus_per_worker))
        free = self.concurrency() / max(1, running)
        node_cpus = max((n.get("Resources", {}).get("CPU", 1.0) for n in ray.nodes()
                         if n.get("Alive")), default=1.0)
        return int(max(own, min(node_cpus, round(r.cpus_per_worker * free))))

    def run_all(self) -> Path:
        waves = self.run.plan.waves()
        swept = {template_of(s) for s in self.sweep_templates()}
        for i, wave in enumerate(waves):
            if swept and any(template_of(s) in swept for s in wave if s.kind != "backbone"):
                self.sweep_all()  # once; finished sweeps are read back from best.json
                swept = set()
            pending = [s for s in wave if not stage_done(self.run_dir / "stages" / s.id)]
            for s in wave:
                if s not in pending:
                    log.info("%s: done already, skipped", s.id)
            pending = [s for s in pending if not self.reuse_stored(s)]
            if pending:
                self.run_wave(i, pending)
            if self.tracking is not None:
                self.tracking.finish_stages(self.exp, wave, self.stage_hparams(wave))
            compose_tables(self.run_dir, self.run.plan)
        self.score_ensembles()
        failed = [s.id for s in self.run.plan.stages
                  if not stage_done(self.run_dir / "stages" / s.id)]
        if failed:
            raise RuntimeError(f"stages failed: {failed}; rerun with --resume {self.run_dir}")
        return self.run_dir

    def score_ensembles(self) -> None:
        """Fold ensembles of every template whose stages are all done, in this process: it is
        inference only, no trial is worth its start-up (umsrep/runner/ensemble.py)."""
        scored = run_ensembles(self.run.ctx, self.run.plan)
        for template in scored:
            log.info("%s: fold ensemble scored", template)
        if scored:
            compose_tables(self.run_dir, self.run.plan)

    def reuse_stored(self, stage: Stage) -> bool:
        """A backbone already in the content-addressed store is recorded without a trial."""
        if not stage.store_key or not (self.run.ctx.store_dir / stage.store_key /
                                       "result.json").exists():
            return False
        run_stage(self.run.ctx, stage)
        log.info("%s: reused backbone %s from the store", stage.id, stage.store_key)
        return True

    def run_wave(self, i: int, stages: list[Stage]) -> None:
        t0 = time.perf_counter()
        n_packs = min(self.concurrency(), len(stages))
        queue = None
        if self.exp.resources.pack and len(stages) > n_packs:
            order = sorted(stages, key=expected_cost, reverse=True)  # longest first
            name = f"umsrep-queue-{ray.get_runtime_context().get_job_id()}-{i}-{time.time_ns()}"
            # on this driver's node: the queue remembers which pack holds which stage, so it
            # must outlive any worker node (a 0-CPU actor could otherwise land on one)
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                  soft=False)
            queue = ray.remote(num_cpus=0)(StageQueue).options(
                name=name, scheduling_strategy=here).remote([s.id for s in order])
            space = {"pack": tune.grid_search(list(range(n_packs))), "queue": name, "wave": i,
                     "pack_size": len(stages), "threads": self.threads(n_packs)}
            trainable = self.trainable(pack_trial)
            log.info("wave %d: %d stages in %d packed Train runs", i, len(stages), n_packs)
        else:
            space = {"stage_id": tune.grid_search([s.id for s in stages]),
                     "threads": self.threads(n_packs)}
            trainable = self.trainable(stage_trial)
        log.info("wave %d: %d Train run(s) at once, %d torch thread(s) per worker", i, n_packs,
                 space["threads"])
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(max_concurrent_trials=self.concurrency()),
            run_config=tune.RunConfig(name=f"wave{i}-{int(time.time())}",
                                      storage_path=str(self.run_dir / "ray_tune"),
                                      callbacks=self.tracking_callbacks(stages), verbose=1),
        )
        results = tuner.fit()
        release_leaked_placement_groups()
        if queue is not None:
            ray.kill(queue)
        errors = {r.config.get("stage_id", f"pack {r.config.get('pack')}"): r.error
                  for r in results if r.error is not None}
        for sid, err in errors.items():
            log.error("%s: FAILED (%s)", sid, err)
        for s in stages:
            sid = s.id
            out = self.run_dir / "stages" / sid
            if not stage_done(out):
                log.warning("%s: not done", sid)
                continue
            res = read_json(out / "result.json") or {}
            log.info("%s: done, train %.1f s, %d epochs, %s params%s", sid, res.get("wall_s", 0),
                     res.get("epochs", 0), f"{res.get('trainable_params', 0):,}",
                     " (reused)" if res.get("reused") else "")
        log.info("wave %d: %.1f s", i, time.perf_counter() - t0)

    # ------------------------------------------------------------------------- sweeps
    def sweep_templates(self) -> list[Stage]:
        search = self.exp.search
        if not search.num_samples:
            return []
        first = min(s.fold for s in self.run.plan.stages)
        targets = search.applies_to or [s.name for s in self.exp.strategies]
        return [s for s in self.run.plan.stages
                if s.fold == first and s.kind in ("head", "baseline") and not s.store_key
                and s.strategy in targets]

    def sweep_all(self) -> None:
        for stage in self.sweep_templates():
            name = template_of(stage)
            best = read_json(self.run_dir / "tune" / name / "best.json")
            if best is None:
                best = self.sweep(stage)
            self.hparams[name] = best["config"]
            atomic_write_json(self.hparams, self.hparams_path)

    def sweep(self, stage: Stage) -> dict[str, Any]:
        search = self.exp.search
        name = template_of(stage)
        objectives, modes = search.objective_modes()
        metric: Any = objectives if len(objectives) > 1 else objectives[0]
        mode: Any = modes if len(objectives) > 1 else modes[0]
        searcher = OptunaSearch(space=optuna_space(search.space), metric=metric, mode=mode,
                                seed=search.seed)
        epochs = self.exp.train_for(stage.strategy).epochs
        scheduler = None
        if search.scheduler == "asha" and len(objectives) == 1:  # refused with more at load
            scheduler = ASHAScheduler(time_attr="epoch", metric=objectives[0], mode=modes[0],
                                      max_t=max(epochs, 1),
                                      grace_period=min(search.grace_period, max(epochs, 1)))
        trainable = self.trainable(sweep_trial)
        path = self.run_dir / "ray_tune" / f"sweep-{name}"
        if tune.Tuner.can_restore(str(path)):
            log.info("sweep %s: resuming %s", name, path)
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"stage_id": stage.id},
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                            num_samples=search.num_samples,
                                            max_concurrent_trials=self.concurrency()),
                run_config=tune.RunConfig(name=f"sweep-{name}",
                                          storage_path=str(self.run_dir / "ray_tune"),
                                          callbacks=self.tracking_callbacks([stage], name),
                                          verbose=1),
            )
        results = tuner.fit()
        release_leaked_placement_groups()
        trials = results.get_dataframe()
        atomic_write_parquet(trials.astype({c: "string" for c in trials.columns
                                            if trials[c].dtype == object}),
                             self.run_dir / "tune" / name / "trials.parquet")
        if len(objectives) == 1:
            best = results.get_best_result(metric=objectives[0], mode=modes[0], scope="all")
            config = searched_config(best.config)
            payload = {"template": name, "stage": stage.id, "metric": objectives[0],
                       "value": float((best.metrics or {}).get(objectives[0], float("nan"))),
                       "config": config, "chosen_on": "validation split of the first fold"}
            log.info("sweep %s: best %s=%.4f with %s", name, objectives[0], payload["value"],
                     config)
        else:
            payload = pareto_payload(results, objectives, modes) | {
                "template": name, "stage": stage.id,
                "chosen_on": "validation split of the first fold (last epoch of each trial)"}
            log.info("sweep %s: kept %s of a Pareto front of %d with %s", name,
                     payload["value"], len(payload["pareto"]), payload["config"])
        atomic_write_json(payload, self.run_dir / "tune" / name / "best.json")
        return payload


def searched_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled hyperparameters (flattened), without the keys the driver adds."""
    return flatten({k: v for k, v in config.items() if k not in RESERVED})


def pareto_payload(results: Any, objectives: list[str], modes: list[str]) -> dict[str, Any]:
    """``best.json``'s choice among the trials of a multi-objective sweep (``sweeps.pareto``):
    each trial's last reported values, the kept trial's configuration and values, the front."""
    trials = [(r.metrics or {}, searched_config(r.config or {})) for r in results]
    values = pd.DataFrame([[float(m.get(o, float("nan"))) for o in objectives]
                           for m, _ in trials], columns=objectives)
    chosen, front = pareto_choice(values, modes)

    def entry(i: int) -> dict[str, Any]:
        return {"value": dict(values.iloc[i].items()), "config": trials[i][1]}

    return {"metric": objectives, "mode": modes, **entry(chosen),
            "pareto": [entry(i) for i in front]}


def release_leaked_placement_groups() -> int:
    """Remove this job's placement groups left behind once a Tuner has finished.

    Ray Train V2 (2.58-2.60) sometimes leaves a finished trial's worker placement group in place
    (its cleaner cannot tell that the controller ended); on a small machine the next trials then
    wait for CPUs forever. Between two Tuner runs none of this job's groups is in use, so every
    one still there is a leak. Groups of other jobs on a shared cluster are left alone: a
    placement group id ends with its job's id.
    """
    job = ray.get_runtime_context().get_job_id()
    removed = 0
    for pg_id, info in ray.util.placement_group_table().items():
        if info.get("state") == "CREATED" and pg_id.endswith(job):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
            removed += 1
    if removed:
        log.info("released %d leaked placement group(s)", removed)
    return removed


def optuna_space(space: dict[str, ParamSpace]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in space.items():
        if p.type == "loguniform":
            out[name] = od.FloatDistribution(float(p.low), float(p.high), log=True)
        elif p.type == "uniform":
            out[name] = od.FloatDistribution(float(p.low), float(p.high))
        elif p.type == "int":
            out[name] = od.IntDistribution(int(p.low), int(p.high))
        else:
            out[name] = od.CategoricalDistribution(list(p.values or []))
    return out


# Environment for every Ray process of a local session (a job's comes from its runtime_env,
# cluster/runtime_env.yaml, which sets the same):
# - trials keep the driver's working directory;
# - Ray Train's controller polls workers every 0.1 s, not 2 s: a worker's report waits until
#   the previous one is taken (a queue of one), so with the default every epoch shorter than
#   2 s was stretched to 2 s (bench/ray_overhead.py, 128 px: 2.07 s wall per epoch vs 1.16 s
#   in the plain loop; 1.34 s at a 0.2 s poll, 1.16 s at 0.05 s).
RAY_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None):
    """Connect to a cluster (``--address`` / a job's RAY_ADDRESS) or start a local session."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "0")
    if ray.is_initialized():
        return ray
    env = {"env_vars": {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}}
    if address or os.environ.get("RAY_ADDRESS"):
        # An existing cluster or a submitted job: keep the job's runtime_env (merging ours into
        # it is refused); every path the run uses is absolute, so trial working dirs don't matter.
        ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        # The dashboard's state API lets Ray Train clean up the workers of trials that ASHA
        # stops; without it their placement groups leak and later trials starve.
        kw: dict[str, Any] = {"address": "local", "runtime_env": env,
                              "configure_logging": False}
        if num_cpus:
            kw["num_cpus"] = num_cpus
        if num_gpus is not None:
            kw["num_gpus"] = num_gpus
        ray.init(**kw)
    return ray
