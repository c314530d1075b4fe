"""Entry point for ``ray job submit --working-dir . -- python -m sweeps.run sweeps/X.yaml``.

Takes the same arguments as ``umsrep sweep`` (``sweeps/cli.py``); inside a Ray job,
``ray.init()`` connects to the cluster that runs the job. The submitting shell needs
``RAY_AUTH_MODE=token`` (the cluster's token authentication, cluster/README.md); the job
inherits the cluster's token.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sweeps.cli import add_arguments, run
from umsrep.cli import report_user_error
from umsrep.config import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.run", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:  # one line, status 2, as `umsrep sweep` reports it
        return report_user_error(exc)


if __name__ == "__main__":
    sys.exit(main())
