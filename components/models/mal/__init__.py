"""Mask Auto-Labeler (MAL; Lan et al., *Vision Transformers Are Good Mask Auto-Labelers*, CVPR 2023).

Learns instance masks from boxes alone and then labels every box of a dataset with a mask.
The network, losses, crop geometry, metrics and labelling are pure torch/numpy and imported
eagerly; the Lightning side (:mod:`.data`, :mod:`.module`) is imported on first use of one of
its names, so ``import components.models.mal.model`` never pulls in Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

from components.models.mal.crops import (
    box_mask_in_crop,
    crop_and_resize,
    paste_mask,
    pixel_bounds,
    test_crop_box,
    train_crop_box,
)
from components.models.mal.losses import (
    color_affinity,
    crf_loss,
    dice_loss,
    linear_ramp,
    mean_field,
    mil_projection_loss,
)
from components.models.mal.metrics import InstanceIoU, filled_box_mask, mask_iou, size_bucket
from components.models.mal.model import ONNX_INPUT_NAMES, ONNX_OUTPUT_NAMES, MaskAutoLabeler, ema_update
from components.models.mal.predict import predict_instance_masks

_LAZY = {
    "BoxCropDataset": "components.models.mal.data",
    "MalDataError": "components.models.mal.data",
    "MalDataModule": "components.models.mal.data",
    "collate": "components.models.mal.data",
    "MONITOR": "components.models.mal.module",
    "CheckpointError": "components.models.mal.module",
    "MaskAutoLabelerModule": "components.models.mal.module",
    "load_module": "components.models.mal.module",
}


def __getattr__(name: str) -> Any:
    """Lightning-side names, imported on first use (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # noqa: RUF022 (grouped: pure names, then the lazily imported Lightning side)
    "ONNX_INPUT_NAMES",
    "ONNX_OUTPUT_NAMES",
    "InstanceIoU",
    "MaskAutoLabeler",
    "box_mask_in_crop",
    "color_affinity",
    "crf_loss",
    "crop_and_resize",
    "dice_loss",
    "ema_update",
    "filled_box_mask",
    "linear_ramp",
    "mask_iou",
    "mean_field",
    "mil_projection_loss",
    "paste_mask",
    "pixel_bounds",
    "predict_instance_masks",
    "size_bucket",
    "test_crop_box",
    "train_crop_box",
    "MONITOR",
    "BoxCropDataset",
    "CheckpointError",
    "MalDataError",
    "MalDataModule",
    "MaskAutoLabelerModule",
    "collate",
    "load_module",
]
