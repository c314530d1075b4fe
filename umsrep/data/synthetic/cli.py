"""``umsrep data synth cxr|doppler -n N --size S --seed K -o DIR``: the synthesis subcommand.

Mounted by ``umsrep.data.cli`` as its ``synth`` subparser (``add_arguments`` / ``run``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from umsrep.data.synthetic import SYNTHESIZERS, synthesize

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=SYNTHESIZERS.names(), help="which modality to generate")
    parser.add_argument("-n", type=int, default=500, help="number of images (default 500)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="folder for images/, masks/, labels.csv and manifest.parquet",
    )


def run(args: argparse.Namespace) -> int:
    manifest = synthesize(args.kind, args.n, args.size, args.seed, out_dir=args.output)
    log.info("manifest: %s", manifest)
    print(manifest)  # the command's output: the manifest path, for scripts to pick up
    return 0
