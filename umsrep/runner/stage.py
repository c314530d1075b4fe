"""One training stage, in plain PyTorch: the top of the runner's chain.

``run_stage`` applies a sweep's tuned hyperparameters to the experiment (``context``), runs the
stage's kind (``kinds.execute_stage``: build, train, score, save the model) and writes its
folder (``<run>/stages/<stage id>/``: ``result.json``, ``metrics.parquet``,
``predictions.parquet``, ``checkpoint/`` with ``model.pt`` + ``model.json``, what
``umsrep predict`` loads). Ray Train calls it in each worker (``sweeps/worker.py``);
``umsrep train`` calls it directly (``umsrep.runner.local``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from umsrep.runner.context import ReportFn, StageContext, with_hyperparameters
from umsrep.runner.kinds import execute_stage
from umsrep.runner.outputs import write_stage_outputs
from umsrep.runner.plan import Stage


def run_stage(ctx: StageContext, stage: Stage, hparams: dict[str, Any] | None = None, *,
              report: ReportFn | None = None, resume_from: Path | None = None,
              out_dir: Path | None = None, rank: int = 0,
              record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one stage; returns (and, on rank 0, writes) its result dict.

    ``hparams``: a sweep's tuned hyperparameters for this stage, applied to the experiment
    here, once (``with_hyperparameters``). ``record``: more fields for ``result.json`` (the
    Ray Train worker adds the node that trained the stage)."""
    ctx = with_hyperparameters(ctx, stage, hparams)
    out = out_dir or ctx.run_dir / "stages" / stage.id
    t0 = time.perf_counter()
    result, metrics, preds = execute_stage(ctx, stage, report=report,
                                           resume_from=resume_from, out_dir=out, rank=rank)
    result.setdefault("total_s", time.perf_counter() - t0)
    result |= record or {}
    if rank == 0:
        write_stage_outputs(out, result, metrics, preds)
    return result
