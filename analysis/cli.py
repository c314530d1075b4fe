"""``umsrep report RUN_DIR [RUN_DIR ...] -o report.html``: the HTML report, plus every table as
CSV, JSON and LaTeX in ``<report stem>_tables/`` next to it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from analysis.load import RunFolderError
from analysis.report import ReportOptions, write_report
from analysis.stats import BOOTSTRAP_RESAMPLES, DEFAULT_IOU_THRESHOLD


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folder(s) written by umsrep"
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("report.html"), help="HTML file to write"
    )
    parser.add_argument("--split", default="test", help="which split to report (default: test)")
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=None,
        help="segmentation: an image is correct for McNemar when IoU >= this (default: the "
        f"run's evaluation.correct_iou, {DEFAULT_IOU_THRESHOLD:g} unless set)",
    )
    parser.add_argument(
        "--exact-below",
        type=int,
        default=25,
        help="McNemar is exact binomial when discordant pairs are fewer than this",
    )
    parser.add_argument(
        "--bootstrap-resamples",
        type=int,
        default=BOOTSTRAP_RESAMPLES,
        help="resamples of the paired bootstrap on the test set",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the paired bootstrap (reproducible intervals)"
    )
    parser.add_argument(
        "--paper-reference",
        type=Path,
        default=None,
        help="JSON file {task: {label: {metric: value}}} of published numbers to show beside "
        "ours; a label that is no strategy is a published anchor, and an optional "
        '"split": "test:<dataset>" puts it in that dataset\'s section',
    )


def run(args: argparse.Namespace) -> int:
    options = ReportOptions(
        split=args.split,
        iou_threshold=args.iou_threshold,
        exact_below=args.exact_below,
        n_resamples=args.bootstrap_resamples,
        seed=args.seed,
    )
    out: Path = args.output
    try:
        for run_dir in args.run_dirs:
            if not run_dir.is_dir():
                raise RunFolderError(f"{run_dir}: not a folder; give run folders umsrep wrote")
        paper = _read_json(args.paper_reference) if args.paper_reference else None
        if paper is None:  # an experiment may carry the paper's published figures itself
            paper = _config_paper_reference(args.run_dirs)
        path = write_report(
            args.run_dirs, out, paper, options, tables_dir=out.parent / f"{out.stem}_tables"
        )
    except (RunFolderError, OSError, json.JSONDecodeError) as exc:
        # a user error: one line and status 2, as every umsrep command reports one
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    print(path)
    return 0


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(f"{path}: not valid JSON: {exc.msg}", exc.doc, exc.pos) from None


def _config_paper_reference(run_dirs) -> dict | None:
    for run_dir in run_dirs:
        cfg = Path(run_dir) / "config.yaml"
        if cfg.exists():
            try:
                config = yaml.safe_load(cfg.read_text()) or {}
            except yaml.YAMLError as exc:
                raise RunFolderError(f"{cfg}: not valid YAML ({exc})") from None
            ref = (config.get("experiment") or {}).get("paper_reference")
            if ref:
                return ref
    return None
