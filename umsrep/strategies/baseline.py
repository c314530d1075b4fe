"""The separate-model baseline (paper Figure 4): a frozen separate denoiser feeding a model.

Each baseline task model is a ``MultiTaskModel`` with one head, built from random
initialization (``umsrep.models.build_model`` with a ``ModelSpec`` of ``baseline_arch``) and
trained on its own; the ``joint`` strategy with that single task is plain supervised training.
For the CXR scenarios its input is first denoised by a separately trained denoiser:
``DenoisedInput(denoiser, model)``, a model (``umsrep.models.denoised``) kept here by name.
"""

from __future__ import annotations

from umsrep.models.denoised import DenoisedInput

__all__ = ["DenoisedInput"]
