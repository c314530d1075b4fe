"""Derivable tasks: outputs computed from trained heads without extra training.

``gradcam`` explains a classification head; ``recommend`` combines head outputs with rules.
"""

from umsrep.derive.gradcam import grad_cam, overlay_heatmap
from umsrep.derive.recommend import Condition, Rule, apply_rules, load_rules

__all__ = ["Condition", "Rule", "apply_rules", "grad_cam", "load_rules", "overlay_heatmap"]
