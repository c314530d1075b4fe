"""Derivable tasks: outputs computed from trained heads without extra training.

``gradcam`` explains a classification head; ``recommend`` combines head outputs with rules.
The names are imported on first use (PEP 562): the experiment file check reads ``recommend``
without importing torch, which ``gradcam`` needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"grad_cam": "gradcam", "overlay_heatmap": "gradcam", "Condition": "recommend",
          "Rule": "recommend", "apply_rules": "recommend", "load_rules": "recommend"}

__all__ = ["Condition", "Rule", "apply_rules", "grad_cam", "load_rules", "overlay_heatmap"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
