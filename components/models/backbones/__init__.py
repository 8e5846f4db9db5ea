"""Backbones every model family builds on: timm feature pyramids and offline pretrained weights.

One place builds them (``build_backbone``: any timm ``features_only`` model or a FAN hybrid,
with ``none | package | path | hub`` weights), so ChangeNet, MAL and the classifiers load
ImageNet weights the same way and a new backbone is added once.
"""

from components.models.backbones.pretrained import PretrainedWeightsError
from components.models.backbones.pyramid import FeaturePyramid, PretrainedSource, build_backbone

__all__ = ["FeaturePyramid", "PretrainedSource", "PretrainedWeightsError", "build_backbone"]
