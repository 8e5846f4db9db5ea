"""Visual ChangeNet-Segmentation: Siamese backbone (timm or FAN hybrid) + ChangeFormer decoder.

Pure torch + timm; the Lightning module, training loop and export live elsewhere.

Names are imported on first use, so importing one light module of the package (a family's
interface, a path helper) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES: dict[str, str] = {
    "ChangeNetSegment": "components.models.changenet.model",
    "DeepSupervisionLoss": "components.models.changenet.losses",
    "FeaturePyramid": "components.models.backbones.pyramid",
    "ONNX_INPUT_NAMES": "components.models.changenet.model",
    "ONNX_OUTPUT_NAMES": "components.models.changenet.model",
    "OUTPUT_NAMES": "components.models.changenet.model",
    "PretrainedWeightsError": "components.models.backbones.pretrained",
    "build_backbone": "components.models.backbones.pyramid",
}

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


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
