"""Visual ChangeNet-Segmentation: Siamese backbone (timm or FAN hybrid) + ChangeFormer decoder.

Pure torch + timm; the Lightning module, training loop and export live elsewhere.
"""

from components.models.backbones.pretrained import PretrainedWeightsError
from components.models.backbones.pyramid import FeaturePyramid, build_backbone
from components.models.changenet.losses import DeepSupervisionLoss
from components.models.changenet.model import (
    ONNX_INPUT_NAMES,
    ONNX_OUTPUT_NAMES,
    OUTPUT_NAMES,
    ChangeNetSegment,
)

__all__ = [
    "ONNX_INPUT_NAMES",
    "ONNX_OUTPUT_NAMES",
    "OUTPUT_NAMES",
    "ChangeNetSegment",
    "DeepSupervisionLoss",
    "FeaturePyramid",
    "PretrainedWeightsError",
    "build_backbone",
]
