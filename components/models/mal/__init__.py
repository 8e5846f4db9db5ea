"""Mask Auto-Labeler (MAL; Lan et al., *Vision Transformers Are Good Mask Auto-Labelers*, CVPR 2023).

Learns instance masks from boxes alone and then labels every box of a dataset with a mask.
The network, losses, crop geometry, metrics and labelling are pure torch/numpy and imported
eagerly; the Lightning side (:mod:`.data`, :mod:`.module`) is imported on first use of one of
its names, so ``import components.models.mal.model`` never pulls in Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "InstanceIoU": "components.models.mal.metrics",
    "MaskAutoLabeler": "components.models.mal.model",
    "ONNX_INPUT_NAMES": "components.models.mal.model",
    "ONNX_OUTPUT_NAMES": "components.models.mal.model",
    "box_mask_in_crop": "components.models.mal.crops",
    "color_affinity": "components.models.mal.losses",
    "crf_loss": "components.models.mal.losses",
    "crop_and_resize": "components.models.mal.crops",
    "dice_loss": "components.models.mal.losses",
    "ema_update": "components.models.mal.model",
    "filled_box_mask": "components.models.mal.metrics",
    "linear_ramp": "components.models.mal.losses",
    "mask_iou": "components.models.mal.metrics",
    "mean_field": "components.models.mal.losses",
    "mil_projection_loss": "components.models.mal.losses",
    "paste_mask": "components.models.mal.crops",
    "pixel_bounds": "components.models.mal.crops",
    "predict_instance_masks": "components.models.mal.predict",
    "size_bucket": "components.models.mal.metrics",
    "test_crop_box": "components.models.mal.crops",
    "train_crop_box": "components.models.mal.crops",
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
    """Every name, imported on first use (PEP 562): the family interface must not import torch."""
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
