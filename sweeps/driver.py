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
from pathlib import Path
from typing import Any

from sweeps.tracking import describe, open_tracking
from umsrep.config import flatten, to_dict
from umsrep.experiment import Experiment, ParamSpace
from umsrep.runner.local import PreparedRun
from umsrep.runner.plan import Stage
from umsrep.runner.runfolder import compose_tables
from umsrep.runner.stage import stage_done
from umsrep.runner.store import atomic_write_json, atomic_write_parquet, read_json

log = logging.getLogger(__name__)

RESERVED = ("stage_id", "run_dir", "train_name", "out_dir", "pack", "queue", "wave",
            "pack_size", "threads")


def template_of(stage: Stage) -> str:
    """A stage's id without its fold: the unit a sweep tunes (e.g. ``independent-lung``)."""
    return stage.id.split("-", 1)[1]


# ----------------------------------------------------------------------------- trial function
def stage_trial(config: dict[str, Any]) -> None:
    """Tune function: launch one TorchTrainer for one stage; metrics flow back to Tune."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from sweeps.worker import train_loop_per_worker

    setup = config["setup"]
    res = setup["resources"]
    common = {
        "experiment": setup["experiment"], "run_dir": setup["run_dir"],
        "store_dir": setup["store_dir"], "use_gpu": res["use_gpu"],
        "threads": int(config.get("threads") or max(1, round(res["cpus_per_worker"]))),
        "fault_injection": setup.get("fault_injection"),
    }
    if "pack" in config:  # a pack: stages from the wave's queue, each with its own hparams
        train_name = f"wave{config['wave']}-pack{config['pack']}"
        loop_config = {**common, "queue": config["queue"], "pack": config["pack"],
                       "stages": setup["stages"], "hparams": setup.get("hparams", {})}
    else:
        hparams = flatten({k: v for k, v in config.items() if k not in RESERVED and k != "setup"})
        hparams = {**setup.get("hparams", {}).get(config["stage_id"], {}), **hparams}
        stage = setup["stages"][config["stage_id"]]
        out_dir = config.get("out_dir") or str(Path(setup["run_dir"]) / "stages" / stage["id"])
        train_name = stage["id"]
        if config.get("out_dir") == "trial":  # a sweep trial: its own folder and Train run name
            import ray.tune

            trial_id = ray.tune.get_context().get_trial_id()
            template = template_of(Stage(**_stage_args(stage)))
            out_dir = str(Path(setup["run_dir"]) / "tune" / template / "trials" / trial_id)
            train_name = f"sweep-{template}-{trial_id}"
        loop_config = {**common, "stage": stage, "hparams": hparams, "out_dir": out_dir}
    resources = {"CPU": res["cpus_per_worker"]}
    if res["use_gpu"]:
        resources["GPU"] = res["gpus_per_worker"]
    # each stage keeps its own budget of lost workers when it shares a Train run (a pack can
    # take any number of the wave's stages)
    max_failures = res["max_failures"] * int(config.get("pack_size", 1))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=res["num_workers"], use_gpu=res["use_gpu"],
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=train_name,
            storage_path=str(Path(setup["run_dir"]) / "ray_train"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures,
                                                   controller_failure_limit=3),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


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

    def setup(self) -> dict[str, Any]:
        return {
            "experiment": self.exp.to_dict(), "run_dir": str(self.run_dir),
            "store_dir": str(self.run.ctx.store_dir),
            "stages": {s.id: dataclasses.asdict(s) for s in self.run.plan.stages},
            "resources": to_dict(self.exp.resources),
            "hparams": {s.id: self.hparams.get(template_of(s), {}) for s in self.run.plan.stages},
            "fault_injection": self.fault_injection,
        }

    def stage_hparams(self, stages: list[Stage]) -> dict[str, dict[str, Any]]:
        """Each stage's swept values (its template's best configuration; empty when unswept)."""
        return {s.id: self.hparams.get(template_of(s), {}) for s in stages}

    def tracking_callbacks(self, stages: list[Stage], sweep: str | None = None) -> list:
        """The MLflow Tune callback of a wave (or of ``sweep``), when tracking is on."""
        if self.tracking is None:
            return []
        from sweeps.tracking_tune import StageMLflowCallback

        described = describe(self.exp, stages, self.run_dir, self.stage_hparams(stages))
        return [StageMLflowCallback(self.tracking, described, sweep=sweep,
                                    reserved=(*RESERVED, "setup"))]

    def trial_resources(self) -> dict[str, float]:
        """What one Tune trial (a TorchTrainer's driver) asks Ray for: ``cpus_per_trial`` and
        the experiment's ``resources.trial_resources`` (e.g. a resource only the head has)."""
        r = self.exp.resources
        return {"cpu": r.cpus_per_trial, **r.trial_resources}

    def concurrency(self) -> int:
        import ray

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
        import ray

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
                    print(f"[umsrep] {s.id}: done already, skipped", flush=True)
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
        from umsrep.runner.ensemble import run_ensembles

        scored = run_ensembles(self.run.ctx, self.run.plan)
        for template in scored:
            print(f"[umsrep] {template}: fold ensemble scored", flush=True)
        if scored:
            compose_tables(self.run_dir, self.run.plan)

    def reuse_stored(self, stage: Stage) -> bool:
        """A backbone already in the content-addressed store is recorded without a trial."""
        if not stage.store_key or not (self.run.ctx.store_dir / stage.store_key /
                                       "result.json").exists():
            return False
        from umsrep.runner.stage import run_stage

        run_stage(self.run.ctx, stage)
        print(f"[umsrep] {stage.id}: reused backbone {stage.store_key} from the store",
              flush=True)
        return True

    def run_wave(self, i: int, stages: list[Stage]) -> None:
        import ray
        from ray import tune
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

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
                     "pack_size": len(stages), "threads": self.threads(n_packs),
                     "setup": self.setup()}
            print(f"[umsrep] wave {i}: {len(stages)} stages in {n_packs} packed Train runs",
                  flush=True)
        else:
            space = {"stage_id": tune.grid_search([s.id for s in stages]),
                     "threads": self.threads(n_packs), "setup": self.setup()}
        print(f"[umsrep] wave {i}: {n_packs} Train run(s) at once, "
              f"{space['threads']} torch thread(s) per worker", flush=True)
        tuner = tune.Tuner(
            tune.with_resources(stage_trial, self.trial_resources()),
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
            print(f"[umsrep] {sid}: FAILED ({err})", flush=True)
        for s in stages:
            sid = s.id
            out = self.run_dir / "stages" / sid
            if not stage_done(out):
                print(f"[umsrep] {sid}: not done", flush=True)
                continue
            res = read_json(out / "result.json") or {}
            print(f"[umsrep] {sid}: done, train {res.get('wall_s', 0):.1f} s, "
                  f"{res.get('epochs', 0)} epochs, {res.get('trainable_params', 0):,} params"
                  f"{' (reused)' if res.get('reused') else ''}", flush=True)
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
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        search = self.exp.search
        name = template_of(stage)
        objectives = search.objectives or [search.metric]
        modes = [search.mode] * len(objectives)
        metric: Any = objectives if len(objectives) > 1 else objectives[0]
        mode: Any = modes if len(objectives) > 1 else modes[0]
        searcher = OptunaSearch(space=optuna_space(search.space), metric=metric, mode=mode,
                                seed=search.seed)
        epochs = self.exp.train.epochs
        scheduler = None
        if search.scheduler == "asha":
            scheduler = ASHAScheduler(time_attr="epoch", metric=objectives[0], mode=modes[0],
                                      max_t=max(epochs, 1),
                                      grace_period=min(search.grace_period, max(epochs, 1)))
        trainable = tune.with_resources(stage_trial, self.trial_resources())
        path = self.run_dir / "ray_tune" / f"sweep-{name}"
        if tune.Tuner.can_restore(str(path)):
            print(f"[umsrep] sweep {name}: resuming {path}", flush=True)
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"stage_id": stage.id, "setup": self.setup(), "out_dir": "trial"},
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
        df = results.get_dataframe()
        keep = [c for c in df.columns if not c.startswith("config/setup")]
        trials = df[keep].copy()
        atomic_write_parquet(trials.astype({c: "string" for c in trials.columns
                                            if trials[c].dtype == object}),
                             self.run_dir / "tune" / name / "trials.parquet")
        best = results.get_best_result(metric=objectives[0], mode=modes[0], scope="all")
        config = flatten({k: v for k, v in best.config.items()
                          if k not in RESERVED and k != "setup"})
        payload = {"template": name, "stage": stage.id, "metric": objectives[0],
                   "value": float((best.metrics or {}).get(objectives[0], float("nan"))),
                   "config": config, "chosen_on": "validation split of the first fold"}
        atomic_write_json(payload, self.run_dir / "tune" / name / "best.json")
        print(f"[umsrep] sweep {name}: best {objectives[0]}={payload['value']:.4f} with "
              f"{config}", flush=True)
        return payload


def release_leaked_placement_groups() -> int:
    """Remove this job's placement groups left behind once a Tuner has finished.

    Ray Train V2 (2.58-2.60) sometimes leaves a finished trial's worker placement group in place
    (its cleaner cannot tell that the controller ended); on a small machine the next trials then
    wait for CPUs forever. Between two Tuner runs none of this job's groups is in use, so every
    one still there is a leak. Groups of other jobs on a shared cluster are left alone: a
    placement group id ends with its job's id.
    """
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

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
    import optuna.distributions as od

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
    import ray

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
