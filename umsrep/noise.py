"""On-the-fly noise for denoising pretraining (paper section 4.1.1, Table 2).

Images reach the model normalized: ``x = pixel / 255 - image_mean`` with ``pixel`` on the 0-255
scale and ``image_mean: [B]`` the per-image mean on the 0-1 scale. Noise is specified on the
0-255 scale, as in the paper, and added in that normalized space.

- ``gaussian``: ``pixel + N(0, sigma^2)``, sigma in {10, 20, 30, 40, 50}.
- ``poisson``: our reading of the paper's "Poisson noise (mu = sigma^2)": additive, zero-mean,
  signal-independent noise ``n = P - sigma^2`` with ``P ~ Poisson(sigma^2)`` (0-255 units), i.e.
  Poisson-distributed noise whose variance is sigma^2, the same as the Gaussian of that sigma, so
  the two rows of Table 2 compare noise of equal power. (The other reading, signal-dependent shot
  noise ``Poisson(pixel)``, has no sigma at all, which the paper's "mu = sigma^2" rules out.)

``mask`` (a fraction, 0 by default) adds masked-block corruption on top of the noise: the image
is cut into ``mask_block`` x ``mask_block`` px cells and each cell, with probability ``mask``,
is set to 0, the image's own mean grey in the normalized space, so the denoiser must fill it
in from what surrounds it (the context encoder of Pathak et al. 2016; the block masking of
MAE-style pretraining, He et al. 2022, for a convolutional network). Additive noise alone can
be undone by local filters; a missing 16 px patch of a 128 px film can only be filled from the
anatomy around it, which asks the encoder's deep features for more than edges.

With ``clip=True`` (default) the noisy pixel is clipped to [0, 255], i.e. the normalized value to
``[-image_mean, 1 - image_mean]``, as a saved noisy image would be. The per-image mean is not
recomputed after adding noise: the target is the clean image in the same normalized space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("gaussian", "poisson")


def _per_image(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar or ``[B]`` value as ``[B, 1, 1, 1]`` on ``x``'s device and dtype."""
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"expected a scalar or shape [{x.shape[0]}], got {tuple(t.shape)}")
    return t.view(-1, 1, 1, 1)


def add_noise(
    x: torch.Tensor,
    image_mean: torch.Tensor,
    kind: str,
    sigma: float | torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    clip: bool = True,
) -> torch.Tensor:
    """Noisy copy of ``x: [B, 1, H, W]`` (normalized) with noise of std ``sigma`` (0-255 scale,
    scalar or ``[B]``); same shape and normalized space. ``generator`` makes it reproducible
    (it must live on ``x``'s device)."""
    if kind not in KINDS:
        raise ValueError(f"noise kind {kind!r} is unknown; use one of {KINDS}")
    sig = _per_image(sigma, x)
    if (sig < 0).any():
        raise ValueError("noise sigma must be >= 0")
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sig
    else:
        rate = (sig**2).expand_as(x).float()
        noise = (torch.poisson(rate, generator=generator) - rate).to(x.dtype)
    noisy = x + noise / 255.0
    if clip:
        mean = _per_image(image_mean, x)
        noisy = torch.maximum(torch.minimum(noisy, 1.0 - mean), -mean)
    return noisy


def mask_blocks(
    x: torch.Tensor, ratio: float, block: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x: [B, C, H, W]`` (normalized) with each ``block`` x ``block`` px cell set to 0 (the
    image's mean grey) with probability ``ratio``, drawn per image and cell with ``generator``."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    if block < 1:
        raise ValueError(f"mask block must be >= 1 px, got {block}")
    if ratio == 0.0:
        return x
    b, _, h, w = x.shape
    cells = (b, 1, -(-h // block), -(-w // block))
    keep = torch.rand(cells, generator=generator, device=x.device) >= ratio
    keep = keep.repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :h, :w]
    return x * keep.to(x.dtype)


@dataclass(frozen=True)
class NoiseConfig:
    """Which noise ``sample_noise`` draws: a kind from ``kinds`` and a sigma from ``sigmas``
    (0-255 scale), once per image (``per_image``) or once per batch; then, with ``mask`` > 0,
    that fraction of ``mask_block`` px cells of every image masked (``mask_blocks``)."""

    kinds: tuple[str, ...] = ("gaussian",)
    sigmas: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0)
    per_image: bool = True
    clip: bool = True
    mask: float = 0.0
    mask_block: int = 16

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if not self.kinds or unknown:
            raise ValueError(f"noise kinds {list(self.kinds)}: use one or more of {KINDS}")
        if not self.sigmas or any(s < 0 for s in self.sigmas):
            raise ValueError(f"noise sigmas {list(self.sigmas)}: give one or more values >= 0")
        if not 0.0 <= self.mask < 1.0 or self.mask_block < 1:
            raise ValueError(f"noise mask {self.mask} / mask_block {self.mask_block}: give a "
                             "fraction in [0, 1) and a block of >= 1 px")


def sample_noise(
    x: torch.Tensor,
    image_mean: torch.Tensor,
    cfg: NoiseConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``x`` with noise drawn as ``cfg`` says; the draw of kinds and sigmas uses ``generator``
    too (on ``x``'s device), so one seeded generator reproduces the whole batch."""
    n = x.shape[0] if cfg.per_image else 1
    kind_idx = torch.randint(len(cfg.kinds), (n,), generator=generator, device=x.device)
    sigma_idx = torch.randint(len(cfg.sigmas), (n,), generator=generator, device=x.device)
    sigmas = torch.tensor(cfg.sigmas, dtype=x.dtype, device=x.device)[sigma_idx]
    kind_idx, sigmas = kind_idx.expand(x.shape[0]), sigmas.expand(x.shape[0])
    out = x.clone()
    for k, kind in enumerate(cfg.kinds):
        rows = kind_idx == k
        if rows.any():
            out[rows] = add_noise(
                x[rows], image_mean[rows], kind, sigmas[rows], generator, clip=cfg.clip
            )
    return mask_blocks(out, cfg.mask, cfg.mask_block, generator)
