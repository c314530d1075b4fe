"""The ``umsrep`` command. Each subcommand lives in the module that owns it; this file only wires
them together, importing lazily so ``umsrep --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module with ``add_arguments(parser)`` and ``run(args) -> int``
_COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("umsrep.data.cli", "import, prepare and synthesize datasets"),
    "models": ("umsrep.models.cli", "list backbones, heads and strategies with parameter counts"),
    "train": ("umsrep.runner.cli", "run one experiment in a single process (no Ray)"),
    "sweep": ("sweeps.cli", "run an experiment with Ray Train + Tune (local or cluster)"),
    "demo": ("sweeps.demo", "run the synthetic demo end to end on the CPU and write its report"),
    "predict": ("umsrep.predict", "apply a trained model folder to new images"),
    "report": ("analysis.cli", "write the interactive HTML report of one or more runs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="umsrep", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # an optional part missing from this install
            sp.set_defaults(_module=module, _error=str(exc))
            continue
        mod.add_arguments(sp)
        sp.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "_error", None):
        print(f"umsrep {args.command}: unavailable ({args._error})", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
