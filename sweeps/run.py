"""Entry point for ``ray job submit --working-dir . -- python -m sweeps.run sweeps/X.yaml``.

Takes the same arguments as ``umsrep sweep``; inside a Ray job, ``ray.init()`` connects to the
cluster that runs the job. The submitting shell needs ``RAY_AUTH_MODE=token`` (the cluster's
token authentication, cluster/README.md); the job inherits the cluster's token.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from umsrep.cli import report_user_error
from umsrep.config import UserError

log = logging.getLogger(__name__)


def run_experiment(exp, output: Path, resume: Path | None = None, address: str | None = None,
                   num_gpus: int | None = None, report: bool = True,
                   fault_injection: dict | None = None) -> Path:
    import ray as _ray

    from sweeps.driver import RayDriver, init_ray
    from umsrep.runner.local import prepare_run

    owned = not _ray.is_initialized() and not address
    ray = init_ray(address, num_gpus=num_gpus)
    device = "cuda" if exp.resources.use_gpu else "cpu"
    run = prepare_run(exp, Path(output), resume=resume, device=device)
    print(f"[umsrep] run folder: {run.run_dir}", flush=True)
    try:
        run_dir = RayDriver(run, exp, fault_injection=fault_injection).run_all()
    finally:
        if owned:
            ray.shutdown()
    if report:
        write_report(run_dir, exp.paper_reference or None)
    return run_dir


def write_report(run_dir: Path, paper_reference: dict | None = None) -> Path | None:
    try:
        from analysis.report import write_report as _write
    except ImportError as exc:  # the analysis package is optional for a sweep
        log.warning("no report: %s", exc)
        return None
    out = run_dir / "report.html"
    _write([run_dir], out, paper_reference=paper_reference)
    print(f"[umsrep] report: {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from sweeps.cli import add_arguments, run

    parser = argparse.ArgumentParser(prog="python -m sweeps.run", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:  # one line, status 2, as `umsrep sweep` reports it
        return report_user_error(exc)


if __name__ == "__main__":
    sys.exit(main())
