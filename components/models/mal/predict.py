"""From an image and its boxes to one full-image mask per box: MAL's labelling step.

The same steps as the paper's inference (phase 1 -> pseudo-labels): cut the centred 1.3x test
crop of every box, predict crop-space probabilities (logits upsampled to the crop size, then
sigmoid), zero everything outside the box, paste the probabilities into the full image and
threshold. Validation, evaluation and the labelling CLI all call these functions, so a mask
is made one way everywhere.

Pure torch/numpy: takes any callable ``crops [B, 3, S, S] in [0, 1] -> logits [B, 1, h, w]``
(a :class:`~components.models.mal.model.MaskAutoLabeler`, its Lightning module, or an
onnxruntime session wrapped in a function).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.models.mal.crops import box_mask_in_crop, crop_and_resize, paste_mask, test_crop_box

__all__ = ["crop_probabilities", "paste_instance", "predict_instance_masks"]

LogitFn = Callable[[torch.Tensor], torch.Tensor]


def crop_probabilities(model: LogitFn, crops: torch.Tensor, box_masks: torch.Tensor) -> torch.Tensor:
    """Foreground probabilities ``[B, 1, S, S]`` of crops, zero outside their boxes.

    The box is a hard prior of MAL's: an object never leaves its box, so whatever the network
    says outside it is discarded (paper's inference multiplies by the crop's box mask).
    """
    logits = model(crops)
    size = crops.shape[-2:]
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return torch.sigmoid(logits) * box_masks.to(logits.device, torch.float32)


def paste_instance(
    probs: np.ndarray | torch.Tensor,
    crop_xyxy: Sequence[float] | np.ndarray,
    image_hw: tuple[int, int],
    threshold: float,
) -> tuple[np.ndarray, float]:
    """Paste one crop's probabilities into the image, threshold them; ``(mask bool [H, W], score)``.

    The score is the mean foreground probability over the predicted mask (0.0 for an empty
    mask): how sure the model is of the pixels it labelled. The paper gives no mask score (it
    passes the input box's score through); this one lets a human review the least confident
    labels first.
    """
    full = paste_mask(probs, crop_xyxy, image_hw)
    mask = full > threshold
    score = float(full[mask].mean()) if mask.any() else 0.0
    return mask, score


@torch.inference_mode()
def predict_instance_masks(
    model: LogitFn,
    image: np.ndarray,
    boxes_xyxy: Sequence[Sequence[float]] | np.ndarray,
    crop_size: int,
    test_margin: float = 0.6,
    threshold: float = 0.5,
    batch_size: int = 8,
) -> tuple[list[np.ndarray], list[float]]:
    """One boolean ``[H, W]`` mask and one score per box of ``image`` (``HxWx3`` uint8).

    Args:
        model: ``crops [B, 3, S, S] in [0, 1] -> logits [B, 1, h, w]``; an ``nn.Module`` is
            put in eval mode for the call (and restored after).
        boxes_xyxy: boxes in image pixels, ``[N, 4]``.
        crop_size: the model's input side ``S``.
        test_margin: the test crop's margin (0.6: a 1.3x crop, see :func:`test_crop_box`).
        threshold: probability above which a pixel is in the mask.
        batch_size: crops per forward pass.

    Returns:
        ``(masks, scores)`` in box order; scores as in :func:`paste_instance`.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    height, width = image.shape[:2]
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    device = _device_of(model)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    masks: list[np.ndarray] = []
    scores: list[float] = []
    try:
        for start in range(0, len(boxes), max(1, int(batch_size))):
            chunk = boxes[start : start + batch_size]
            crop_boxes = [test_crop_box(box, test_margin) for box in chunk]
            crops = np.stack([crop_and_resize(image, crop, crop_size) / scale for crop in crop_boxes])
            box_masks = np.stack(
                [box_mask_in_crop(box, crop, crop_size) for box, crop in zip(chunk, crop_boxes, strict=True)]
            )
            crops_t = torch.from_numpy(crops).permute(0, 3, 1, 2).float().to(device)
            probs = crop_probabilities(model, crops_t, torch.from_numpy(box_masks)[:, None]).cpu()
            for crop, prob in zip(crop_boxes, probs, strict=True):
                mask, score = paste_instance(prob[0], crop, (height, width), threshold)
                masks.append(mask)
                scores.append(score)
    finally:
        if was_training:
            model.train()  # type: ignore[union-attr]
    return masks, scores


def _device_of(model: LogitFn) -> torch.device:
    if isinstance(model, nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")
