"""A frozen denoiser in front of a model: the separate-model baseline's input (paper Figure 4).

Each baseline task model is a ``MultiTaskModel`` with one head, trained from random
initialization; for the CXR scenarios its input is first denoised by a separately trained
denoiser: ``DenoisedInput(denoiser, model)`` (built by ``umsrep.models.build_model`` when a
``ModelSpec`` has ``denoised_input``).
"""

from __future__ import annotations

import torch

from umsrep.models.multitask import MultiTaskModel


class DenoisedInput(MultiTaskModel):
    """``model(denoiser(x))`` honouring the MultiTaskModel contract.

    ``denoiser`` is a trained MultiTaskModel with a ``denoise`` head (``denoise_task``); it is
    frozen (no gradients, kept in eval mode) and runs under ``no_grad``. Its output
    ``[B, 1, H, W]`` is in the same normalized space as ``x``, so ``model`` sees the kind of
    input it would see without it. ``backbone`` and ``heads`` are ``model``'s, so strategies
    and trainable-parameter counts see only the task model.
    """

    def __init__(
        self, denoiser: MultiTaskModel, model: MultiTaskModel, denoise_task: str | None = None
    ) -> None:
        super().__init__(model.backbone, dict(model.heads))
        if denoise_task is None:
            if len(denoiser.task_names) != 1:
                raise ValueError(
                    f"the denoiser has heads {denoiser.task_names}; name its denoise head with "
                    "denoise_task="
                )
            denoise_task = denoiser.task_names[0]
        if denoise_task not in denoiser.heads:
            raise ValueError(f"the denoiser has no head {denoise_task!r}: {denoiser.task_names}")
        self.denoise_task = denoise_task
        self.denoiser = denoiser
        for p in self.denoiser.parameters():
            p.requires_grad_(False)
        self.denoiser.eval()

    def train(self, mode: bool = True) -> DenoisedInput:
        super().train(mode)
        self.denoiser.eval()
        return self

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """The denoised input ``[B, 1, H, W]`` (no gradient)."""
        with torch.no_grad():
            return self.denoiser.forward_task(x, self.denoise_task)

    def forward(self, x: torch.Tensor, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        return super().forward(self.denoise(x), tasks)
