"""Model presets: channel-width multipliers.

``paper`` is the paper's layer widths (for 256x256 inputs), ``default`` is the same, ``tiny``
scales every width by 0.25 so tests run on a CPU in seconds. The paper's trainable-parameter
counts, checked against these presets, are in ``umsrep.models.paper_counts``.
"""

from __future__ import annotations

PRESET_WIDTHS: dict[str, float] = {"paper": 1.0, "default": 1.0, "tiny": 0.25}


def resolve_width(preset: str, width: float | None) -> float:
    """The channel multiplier: ``width`` if given, else the preset's."""
    if preset not in PRESET_WIDTHS:
        known = ", ".join(PRESET_WIDTHS)
        raise ValueError(f"unknown model preset {preset!r}; use one of {known}")
    if width is None:
        return PRESET_WIDTHS[preset]
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return float(width)
