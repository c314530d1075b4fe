"""``umsrep models``: every registered backbone, head and strategy with its trainable parameter
count at the ``paper`` preset (sizes for 256x256 input; convolutional counts do not depend on
the input size), and the comparison with the paper's Tables 4 and 8."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from typing import Any

from umsrep.models import (
    BACKBONES,
    HEADS,
    build_backbone,
    build_head,
    count_trainable_params,
    paper_parameter_report,
)

logger = logging.getLogger(__name__)

NUM_CLASSES = 2  # classification heads are counted for a binary task, as in Table 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", help="model preset (paper, default, tiny)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")


def collect(preset: str = "paper") -> dict[str, Any]:
    """Backbone counts, head counts per backbone, strategy names and the paper report."""
    backbones = {name: build_backbone(name, preset=preset) for name in BACKBONES}
    heads: dict[str, dict[str, int]] = {}
    for head in HEADS:
        num_classes = NUM_CLASSES if head == "classification" else None
        heads[head] = {
            bb_name: count_trainable_params(
                build_head(head, bb, num_classes=num_classes, preset=preset)
            )
            for bb_name, bb in backbones.items()
        }
    return {
        "preset": preset,
        "backbones": {name: count_trainable_params(bb) for name, bb in backbones.items()},
        "heads": heads,
        "strategies": _strategies(),
        "paper": paper_parameter_report(),
    }


def _strategies() -> list[str] | None:
    """Registered strategy names, or None when ``umsrep.strategies`` has no registry yet."""
    try:
        registry = importlib.import_module("umsrep.strategies").STRATEGIES
    except (ImportError, AttributeError):
        logger.debug("umsrep.strategies.STRATEGIES is not available")
        return None
    return list(registry)


def format_report(info: dict[str, Any]) -> str:
    backbone_names = list(info["backbones"])
    lines = [f"Backbones (preset {info['preset']}, trainable parameters):"]
    lines += [f"  {name:<12} {count:>12,}" for name, count in info["backbones"].items()]
    lines.append("Heads (trainable parameters on each backbone; classification: 2 classes):")
    lines.append("  " + f"{'head':<16}" + "".join(f"{b:>12}" for b in backbone_names))
    for head, counts in info["heads"].items():
        lines.append("  " + f"{head:<16}" + "".join(f"{counts[b]:>12,}" for b in backbone_names))
    strategies = info["strategies"]
    lines.append("Strategies (each decides which of the parameters above it trains):")
    lines.append("  " + (", ".join(strategies) if strategies else "(none registered)"))
    lines.append("Paper comparison (Tables 4 and 8, paper preset):")
    lines.append(f"  {'model':<58}{'paper':>11}{'ours':>11}{'diff':>10}  exact")
    for row in info["paper"]:
        lines.append(
            f"  {row['model']:<58}{row['paper']:>11,}{row['ours']:>11,}"
            f"{row['difference']:>+10,}  {'yes' if row['exact'] else 'no'}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = collect(args.preset)
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0
