"""``umsrep data``: import datasets into manifests, prepare caches, synthesize data.

    umsrep data import NAME PATH -o OUT.parquet [--dataset NAME] [--metadata col1,col2]
    umsrep data prepare MANIFEST --size 256 -o CACHE [--workers N]
    umsrep data synth cxr|doppler -n N --size S --seed K -o DIR
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True)
    imp = sub.add_parser("import", help="import a dataset folder (or generic CSV) to a manifest")
    from umsrep.data.importers import IMPORTERS  # lazy: pandas and OpenCV off `umsrep --help`

    imp.add_argument("name", choices=IMPORTERS.names(), help="dataset importer")
    imp.add_argument("path", help="dataset folder (or the CSV for 'generic')")
    imp.add_argument("-o", "--out", required=True, help="manifest to write (.parquet)")
    imp.add_argument("--dataset", help="dataset name stored in the manifest")
    imp.add_argument("--metadata", help="generic: comma-separated non-label columns")
    imp.add_argument("--workers", type=int, help="processes checking files (default: all cores)")

    prep = sub.add_parser("prepare", help="decode and resize a manifest into a cache")
    prep.add_argument("manifest")
    prep.add_argument("--size", type=int, default=256, help="output side in pixels (default 256)")
    prep.add_argument("-o", "--out", required=True, help="cache root folder")
    prep.add_argument("--workers", type=int, help="processes (default: all cores)")
    prep.add_argument("--interpolation", default="bicubic",
                      choices=["bicubic", "bilinear", "area", "nearest"])
    prep.add_argument("--fit", default="stretch", choices=["stretch", "pad"],
                      help="stretch to the square (paper) or pad to a square first (keeps aspect)")
    prep.add_argument("--contrast", default="none", choices=["none", "clahe", "equalize"],
                      help="per-image contrast normalization of the original (umsrep/data/contrast.py)")

    syn = sub.add_parser("synth", help="write a synthetic CXR or Doppler dataset")
    syn.add_argument("kind", choices=["cxr", "doppler"])
    syn.add_argument("-n", type=int, default=200, help="number of images")
    syn.add_argument("--size", type=int, default=256)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("-o", "--out", required=True, help="output folder")


def _run_import(args: argparse.Namespace) -> int:
    from umsrep.data.importers import run_import  # lazy: pandas and OpenCV off `umsrep --help`

    options: dict[str, object] = {}
    if args.dataset:
        options["dataset"] = args.dataset
    if args.metadata:
        if args.name != "generic":
            raise SystemExit("--metadata applies only to the generic importer")
        options["metadata"] = [c for c in args.metadata.split(",") if c]
    if args.workers:
        options["workers"] = args.workers
    report = run_import(args.name, args.path, args.out, **options)
    print(f"imported {len(report.manifest)}, quarantined {len(report.quarantine)} -> "
          f"{report.manifest_path}")
    if report.quarantine:
        print(f"quarantine list: {report.quarantine_path}")
    return 0 if len(report.manifest) else 1


def _run_prepare(args: argparse.Namespace) -> int:
    from umsrep.data.cache import prepare_cache  # lazy: pandas and OpenCV off `umsrep --help`

    folder = prepare_cache(args.manifest, size=args.size, out=args.out, workers=args.workers,
                           interpolation=args.interpolation, fit=args.fit,
                           contrast=args.contrast)
    print(folder)
    return 0


def _run_synth(args: argparse.Namespace) -> int:
    from umsrep.data.synthetic import synthesize  # lazy: pandas and OpenCV off `umsrep --help`

    path = synthesize(args.kind, n=args.n, size=args.size, seed=args.seed, out_dir=args.out)
    print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {"import": _run_import, "prepare": _run_prepare, "synth": _run_synth}
    return handlers[args.data_command](args)
