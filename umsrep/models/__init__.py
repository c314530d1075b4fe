"""Models: shared backbones, task heads, separate baselines and the multi-task wrapper.

Build everything by registered name::

    backbone = build_backbone("cdae", preset="tiny")
    heads = {"lung": build_head("seg_cdae", backbone),
             "abnormal": build_head("classification", backbone, num_classes=2)}
    model = MultiTaskModel(backbone, heads)

A trained network is described by a ``ModelSpec`` (what ``model.json`` stores) and built by
``build_model(spec)``: training, the backbone store and ``umsrep predict`` all use it.

Contracts: ``backbone.forward_features(x: [B, 1, H, W]) -> list[Tensor]`` (shallowest first),
``backbone.feature_channels``, ``backbone.name``; ``head(feats, x)`` returns logits ``[B, C]``
(classification), logits ``[B, 1, H, W]`` (segmentation) or a reconstruction ``[B, 1, H, W]``
(denoise, in the input's normalized space); ``head.kind`` names which.
"""

from umsrep.models import encoders, heads  # noqa: F401  (fills the registries)
from umsrep.models._factory import BACKBONES, HEADS, build_backbone, build_head, scale_channels
from umsrep.models.denoised import DenoisedInput
from umsrep.models.multitask import MultiTaskModel, count_trainable_params
from umsrep.models.paper_counts import PAPER_COUNTS, paper_parameter_report
from umsrep.models.presets import PRESET_WIDTHS
from umsrep.models.separate import IdentityBackbone, PaperClassifier, build_separate_model
from umsrep.models.spec import BackboneSpec, ModelSpec, build_model

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "DenoisedInput",
    "HEADS",
    "PAPER_COUNTS",
    "PRESET_WIDTHS",
    "IdentityBackbone",
    "ModelSpec",
    "MultiTaskModel",
    "PaperClassifier",
    "build_backbone",
    "build_head",
    "build_model",
    "build_separate_model",
    "count_trainable_params",
    "paper_parameter_report",
    "scale_channels",
]
