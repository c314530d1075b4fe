"""``classification``: GAP on the deepest features, FC, ReLU, dropout, FC -> logits.

The paper's head is "GAP, FC, D, SM"; softmax lives in the cross-entropy loss, so the head
returns logits. Paper preset: FC 256 wide, dropout 0.5 (the FC width and dropout of the same
authors' exact echo reconstruction). On ``cdae`` with 2 classes: 66,306 parameters; the
paper reports 295,715 (see ``umsrep.models.presets`` for what would explain the gap).
``hidden=0`` gives GAP, dropout, FC (no hidden layer).

Two umsrep options, not in the paper:

- ``levels=N`` pools each of the backbone's N deepest feature maps and concatenates them.
- ``guide="<segmentation task>"``: guided pooling. Each map is averaged with the weights of that
  task's predicted probability map (its head in the same model, run first, detached: the
  classification loss does not train the segmentation head), resized to the map. A TB head
  guided by ``lung`` sees only what lies over the lungs, not the film's borders, letterbox
  bands or text; the same idea as classifying lung-segmented radiographs, with the mask from
  the model's own lung head. A model without the guide's head (a separate baseline model, an
  independent stage of this task alone) pools the whole map (``umsrep.models.spec``).
- ``convs=N``: N 3x3 conv + batch norm + ReLU layers (stride 1, the map's own channels) on the
  deepest map before it is pooled. The ``cdae`` encoder is four strided convs: a unit of its
  deepest map sees 31 px of a 128 px image, so pooling it averages small patches; two convs
  widen that to 95 px (most of a lung field) for ~2 % of a lung step's compute.
  ``conv_channels=C`` gives those convs C output channels instead of the map's own (the first
  maps the map's channels to C; C is scaled by the backbone's ``width``, as ``hidden`` is): on
  a frozen backbone the convs are most of the head's step, and their compute falls with C
  roughly as C (the first conv) and C squared (the others).
- ``pool="gem"``: generalized mean (Radenovic et al. 2018), ``(mean f^p)^(1/p)`` with a learnt
  ``p`` (from 3) per head, under the guide's weights when guided: a small lesion moves the
  pooled feature more than under a plain mean (p=1), less than under max (p->inf).
- ``grid=G``: each map is pooled to G x G cells instead of one mean, over the bounding box of
  the guide's mask (probability > 0.5) when guided, over the whole map otherwise; each cell is
  a guided mean (``torchvision.ops.roi_align`` of ``f * w`` over that of ``w``). Global pooling
  forgets where a feature lies; TB sits mostly in the upper lobes, and the lung box puts the
  apex in the same cells on every site's film whatever its borders, bands or field of view.
  The head's first layer takes ``G * G`` times the channels.
- ``crop=True`` (guided heads only): the head reads the backbone again on the guide's box
  (probability > 0.5, widened by ``CROP_MARGIN`` of its size on each side), cut from the input
  and resized to the input's size (``crop_to_guide``), pooled under the guide cut the same
  way. The lungs then fill the image the head sees, at a finer scale (a lung box is ~0.7 of a
  film's width and height, so ~1.4x), and every site's film is framed alike whatever its
  borders, bands or field of view. One more backbone pass for this head.
- ``dilate=N`` (guided heads only): the guide's weights are widened by N pixels of the input
  (a max filter of side 2N + 1, ``dilate_guide``) before the head pools under them. The
  Shenzhen masks a lung head learns from leave out opaque lung (consolidation, effusion: where
  TB shows) that other sites' masks include, so the predicted mask may stop short of the
  disease; widening it takes in the lung's edge and what lies just outside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from umsrep.models._factory import HEADS, scale_channels
from umsrep.models.encoders.cdae import conv_bn_relu

POOLS = ("mean", "gem")


class ClassificationHead(nn.Module):
    """``forward(feats, x, guide=None) -> logits [B, num_classes]`` from the last
    ``levels`` maps of ``feats`` (``in_channels``: an int for one map, or their channels);
    ``guide``: ``[B, 1, H, W]`` weights 0-1 when the head was built with a ``guide`` task."""

    kind = "classification"

    @property
    def feature_levels(self) -> int:
        """The deepest maps of ``feats`` it reads (``umsrep.strategies.replay``)."""
        return self.levels

    def __init__(
        self, in_channels: int | list[int], num_classes: int, *, hidden: int = 256,
        dropout: float = 0.5, guide: str | None = None, convs: int = 0, pool: str = "mean",
        grid: int = 0, conv_channels: int = 0, crop: bool = False, dilate: int = 0,
    ) -> None:
        super().__init__()
        channels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        self.levels = len(channels)
        self.guide = guide or None
        if crop and not self.guide:
            raise ValueError("crop cuts the input to the guide's box: give guide too")
        self.crop = bool(crop)
        if isinstance(dilate, bool) or not isinstance(dilate, int) or dilate < 0:
            raise ValueError(f"dilate must be a whole number of pixels >= 0, got {dilate!r}")
        if dilate and not self.guide:
            raise ValueError("dilate widens the guide's weights: give guide too")
        self.dilate = dilate
        if grid < 0:
            raise ValueError(f"grid must be >= 0, got {grid}")
        self.grid = grid
        if conv_channels < 0:
            raise ValueError(f"conv_channels must be >= 0, got {conv_channels}")
        if conv_channels and not convs:  # it would silently do nothing
            raise ValueError(f"conv_channels={conv_channels} sets the width of the convs: "
                             "give convs >= 1 too")
        deep = conv_channels if convs and conv_channels else channels[-1]
        widths = [channels[-1]] + [deep] * convs
        in_channels = (sum(channels[:-1]) + deep) * max(grid, 1) ** 2
        if num_classes < 2:
            raise ValueError(f"classification head needs num_classes >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if convs < 0:
            raise ValueError(f"convs must be >= 0, got {convs}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.num_classes = num_classes
        self.convs = nn.Sequential(*(conv_bn_relu(a, b) for a, b in zip(widths[:-1], widths[1:],
                                                                        strict=True)))
        # GeM's exponent, learnt; 3 is the usual start (p=1 is the mean)
        self.p = nn.Parameter(torch.tensor(3.0)) if pool == "gem" else None
        if hidden > 0:
            self.mlp = nn.Sequential(
                nn.Linear(in_channels, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:
            self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, num_classes))

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor,
                guide: torch.Tensor | None = None) -> torch.Tensor:
        maps = list(feats[-self.levels:])
        maps[-1] = self.convs(maps[-1])
        if self.dilate and guide is not None:
            guide = dilate_guide(guide, self.dilate)
        boxes = guide_boxes(guide) if self.grid and guide is not None else None
        pooled = [self._pool(f, guide, boxes).flatten(1) for f in maps]
        return self.mlp(torch.cat(pooled, dim=1))

    def _pool(self, f: torch.Tensor, guide: torch.Tensor | None,
              boxes: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, C]``, or ``[B, C, G, G]`` with ``grid``; ``boxes``: ``guide_boxes(guide)``."""
        if self.p is None:
            return self._mean(f, guide, boxes)
        # in float32: x ** p and its root lose too much in bf16
        p = self.p.float().clamp(min=1.0)
        x = f.float().clamp(min=1e-6) ** p
        m = self._mean(x, None if guide is None else guide.float(), boxes)
        return m.clamp(min=1e-12) ** (1.0 / p)

    def _mean(self, f: torch.Tensor, guide: torch.Tensor | None,
              boxes: torch.Tensor | None) -> torch.Tensor:
        if not self.grid:
            return f.mean(dim=(2, 3)) if guide is None else guided_mean(f, guide)
        if guide is None:
            return F.adaptive_avg_pool2d(f, self.grid)
        return guided_grid_mean(f, guide, boxes, self.grid)


def dilate_guide(weights: torch.Tensor, pixels: int) -> torch.Tensor:
    """``weights [B, 1, H, W]`` widened by ``pixels``: each the maximum of its
    ``(2 pixels + 1)``-square neighbourhood (what ``F.max_pool2d(weights, 2 pixels + 1,
    stride=1, padding=pixels)`` gives, to the bit). Computed as two 1-D running maxima by
    doubling windows: ~2 ms for a batch of 16 at 128 px on one CPU thread against max_pool2d's
    ~130 ms at 8 px, which doubled a joint training step."""
    if pixels <= 0:
        return weights
    k = 2 * pixels + 1
    x = F.pad(weights, (pixels, pixels, pixels, pixels), value=float("-inf"))
    return _window_max(_window_max(x, k, -1), k, -2)


def _window_max(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Maximum over each window of ``k`` along ``dim`` (the length shrinks by ``k - 1``): the
    window doubles with each step, and the last step overlaps two windows to reach ``k``."""
    w = 1
    while 2 * w <= k:
        n = x.shape[dim]
        x = torch.maximum(x.narrow(dim, 0, n - w), x.narrow(dim, w, n - w))
        w *= 2
    if k > w:
        n, s = x.shape[dim], k - w
        x = torch.maximum(x.narrow(dim, 0, n - s), x.narrow(dim, s, n - s))
    return x


def guided_mean(features: torch.Tensor, weights: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``features [B, C, h, w]`` averaged with ``weights [B, 1, H, W]`` (0-1, area-resized to
    ``h x w``) -> ``[B, C]``; an all-zero weight map gives ~0 features rather than NaN."""
    w = F.interpolate(weights.to(features.dtype), size=features.shape[-2:], mode="area")
    return (features * w).sum(dim=(2, 3)) / (w.sum(dim=(2, 3)) + eps)


def guide_boxes(weights: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``[B, 1, H, W]`` weights -> ``[B, 4]`` boxes ``(x1, y1, x2, y2)`` in pixel edges around
    the pixels above ``threshold``; the whole image where none is."""
    b, _, h, w = weights.shape
    on = weights[:, 0] > threshold
    rows, cols = on.any(dim=2), on.any(dim=1)  # [B, H], [B, W]
    empty = ~rows.any(dim=1)
    ys = torch.arange(h, device=weights.device)
    xs = torch.arange(w, device=weights.device)
    y1 = torch.where(rows, ys, h).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1) + 1
    x1 = torch.where(cols, xs, w).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1) + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    full = torch.tensor([0.0, 0.0, float(w), float(h)], device=weights.device)
    return torch.where(empty[:, None], full, boxes)


CROP_MARGIN = 0.05


def crop_boxes(weights: torch.Tensor, margin: float = CROP_MARGIN) -> torch.Tensor:
    """``guide_boxes(weights)`` widened by ``margin`` of each box's size on each side, within
    the image: ``[B, 4]`` ``(x1, y1, x2, y2)`` in pixel edges."""
    h, w = weights.shape[-2:]
    boxes = guide_boxes(weights)
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=weights.device)
    hi = torch.tensor([w, h, w, h], device=weights.device, dtype=boxes.dtype)
    return torch.minimum((boxes + sign * margin * size).clamp(min=0.0), hi)


def crop_to_guide(x: torch.Tensor, weights: torch.Tensor,
                  margin: float = CROP_MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [B, C, H, W]`` and ``weights [B, 1, H, W]`` cut to ``crop_boxes(weights, margin)``,
    each resized to ``H x W`` (``roi_align``, bilinear); an image without a pixel above 0.5 is
    kept whole."""
    boxes = crop_boxes(weights, margin)
    index = torch.arange(boxes.size(0), device=x.device, dtype=boxes.dtype)
    rois = torch.cat([index[:, None], boxes], dim=1)
    kw = dict(output_size=tuple(x.shape[-2:]), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return (roi_align(x.float(), rois, **kw).to(x.dtype),
            roi_align(weights.float(), rois, **kw).to(weights.dtype))


def uncrop(maps: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``maps [B, C, h, w]`` over the crops of ``boxes [B, 4]`` (``crop_boxes``) put back where
    they were cut in an image of ``size`` (bilinear), zero outside the box: the inverse of
    ``crop_to_guide`` for a heatmap of what a cropping head saw."""
    hh, ww = size
    ys = torch.arange(hh, device=maps.device, dtype=torch.float32) + 0.5  # pixel centres
    xs = torch.arange(ww, device=maps.device, dtype=torch.float32) + 0.5
    b = boxes.float()
    u = (xs[None, :] - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]).clamp(min=1e-6) * 2 - 1  # [B, W]
    v = (ys[None, :] - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]).clamp(min=1e-6) * 2 - 1  # [B, H]
    grid = torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None]), dim=-1)
    out = F.grid_sample(maps.float(), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    inside = (grid.abs() <= 1).all(dim=-1)[:, None]  # [B, 1, H, W]
    return (out * inside).to(maps.dtype)


def guided_grid_mean(features: torch.Tensor, weights: torch.Tensor, boxes: torch.Tensor,
                     grid: int, eps: float = 1e-3) -> torch.Tensor:
    """``features [B, C, h, w]`` pooled to ``[B, C, grid, grid]`` cells over ``boxes [B, 4]``
    (pixels of ``weights [B, 1, H, W]``), each cell the mean under ``weights`` (area-resized to
    ``h x w``): ``roi_align(f * w) / roi_align(w)``."""
    f = features.float()
    w = F.interpolate(weights.float(), size=f.shape[-2:], mode="area")
    sx, sy = f.shape[-1] / weights.shape[-1], f.shape[-2] / weights.shape[-2]
    scale = torch.tensor([sx, sy, sx, sy], device=f.device, dtype=f.dtype)
    # the image index of each box; from size(0), not len(), so a traced model keeps the batch free
    index = torch.arange(boxes.size(0), device=f.device, dtype=f.dtype)
    rois = torch.cat([index[:, None], boxes.to(f.dtype) * scale], dim=1)
    kw = dict(output_size=grid, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    num = roi_align(f * w, rois, **kw)
    den = roi_align(w, rois, **kw)
    return (num / (den + eps)).to(features.dtype)


@HEADS.register("classification")
def build_classification(
    backbone: nn.Module,
    *,
    num_classes: int | None,
    width: float,
    hidden: int = 256,
    dropout: float = 0.5,
    levels: int = 1,
    guide: str | None = None,
    convs: int = 0,
    pool: str = "mean",
    grid: int = 0,
    conv_channels: int = 0,
    crop: bool = False,
    dilate: int = 0,
) -> ClassificationHead:
    if num_classes is None:
        raise ValueError("classification head needs num_classes (e.g. num_classes=2)")
    channels = list(backbone.feature_channels)
    if not 1 <= levels <= len(channels):
        raise ValueError(f"levels must be 1..{len(channels)} (the backbone's feature maps), "
                         f"got {levels}")
    hidden = scale_channels(hidden, width) if hidden > 0 else 0
    return ClassificationHead(
        channels[-levels:] if levels > 1 else channels[-1], num_classes, hidden=hidden,
        dropout=dropout, guide=guide, convs=convs, pool=pool, grid=grid,
        conv_channels=scale_channels(conv_channels, width) if conv_channels > 0 else conv_channels,
        crop=crop, dilate=dilate,
    )
