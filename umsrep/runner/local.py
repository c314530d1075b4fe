"""Run a whole experiment in one process, stage by stage (``umsrep train``; no Ray)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from umsrep.experiment import Experiment
from umsrep.runner.context import StageContext, build_tasks
from umsrep.runner.data import RunData, load_run_data, materialize, save_run_data
from umsrep.runner.ensemble import run_ensembles
from umsrep.runner.environment import write_environment
from umsrep.runner.outputs import stage_done
from umsrep.runner.plan import Plan, build_plan, pool_digest
from umsrep.runner.runfolder import (
    check_resume_config,
    compose_tables,
    new_run_dir,
    write_config,
)
from umsrep.runner.stage import run_stage

log = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    run_dir: Path
    data: RunData
    plan: Plan
    ctx: StageContext


def default_store(exp: Experiment) -> Path:
    return Path(exp.data.cache_dir).expanduser().resolve() / "backbones"


def prepare_run(exp: Experiment, output: Path, resume: Path | None = None,
                device: str = "cpu") -> PreparedRun:
    """Create (or reopen, with ``resume``) a run folder, its data and its plan."""
    if resume is not None:
        run_dir = Path(resume).resolve()
        check_resume_config(run_dir, exp)
        write_environment(run_dir)  # a second file only when the versions changed
        data = load_run_data(run_dir)
    else:
        run_dir = new_run_dir(Path(output).resolve(), exp.name)
        data = materialize(exp)
        save_run_data(data, run_dir)
        write_config(run_dir, exp)
    folds = list(range(exp.folds.run or exp.folds.k))
    plan = build_plan(exp, folds, {f: pool_digest(exp, data, f) for f in folds})
    ctx = StageContext(exp=exp, data=data, run_dir=run_dir, store_dir=default_store(exp),
                       device=device, tasks=build_tasks(exp, data.index),
                       store_keys=plan.backbone_keys())
    return PreparedRun(run_dir, data, plan, ctx)


def run_local(exp: Experiment, output: Path, resume: Path | None = None,
              device: str = "cpu") -> Path:
    run = prepare_run(exp, output, resume, device)
    for wave in run.plan.waves():
        for stage in wave:
            out = run.run_dir / "stages" / stage.id
            if stage_done(out):
                log.info("%s: done already, skipped", stage.id)
                continue
            result = run_stage(run.ctx, stage)
            log.info("%s: %.1f s, %d epochs, %d trainable params", stage.id,
                     result["wall_s"], result["epochs"], result["trainable_params"])
        compose_tables(run.run_dir, run.plan)
    if run_ensembles(run.ctx, run.plan):  # inference only; done ones are skipped on --resume
        compose_tables(run.run_dir, run.plan)
    return run.run_dir
