"""umsrep: shared modality-specific backbones + task heads for medical image analysis.

Each subcommand lives in the module that owns it; this file only wires them together and imports
just the module of the command being run."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from umsrep.config import UserError

# subcommand -> module with ``add_arguments(parser)`` and ``run(args) -> int``
_COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("umsrep.data.cli", "import, prepare and synthesize datasets"),
    "models": ("umsrep.models.cli", "list backbones, heads and strategies with parameter counts"),
    "train": ("umsrep.runner.cli", "run one experiment in a single process (no Ray)"),
    "sweep": ("sweeps.cli", "run an experiment with Ray Train + Tune (local or cluster)"),
    "demo": ("sweeps.demo", "run the synthetic demo end to end on the CPU and write its report"),
    "predict": ("umsrep.predict", "apply a trained model folder (or several, averaged) to images"),
    "export": ("umsrep.export", "write model folders as one ONNX/TorchScript file + bundle.json"),
    "report": ("analysis.cli", "write the interactive HTML report of one or more runs"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (so ``umsrep data`` never loads Ray,
    torch or plotly it does not need)."""
    parser = argparse.ArgumentParser(prog="umsrep", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        sp.set_defaults(_module=module)
        if name != command:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # an optional part missing from this install
            sp.set_defaults(_error=str(exc))
            continue
        mod.add_arguments(sp)
    return parser


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "_error", None):
        print(f"umsrep {args.command}: unavailable ({args._error})", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except UserError as exc:
        logging.getLogger("umsrep").debug("the error's traceback", exc_info=True)  # -v shows it
        return report_user_error(exc)


def report_user_error(exc: UserError) -> int:
    """Print ``exc`` as one line ``error: <message>`` on stderr; returns the exit status, 2."""
    print("error: " + str(exc).replace("\n", " "), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
