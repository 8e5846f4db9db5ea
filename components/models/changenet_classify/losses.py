"""Losses of the two difference modules: weighted cross-entropy (learnable) and contrastive (euclidean),
and the auxiliary change-mask loss on the location scores of ``pooling: topk``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationLoss", "change_mask_loss", "contrastive_loss", "mask_on_grid"]


def contrastive_loss(distance: torch.Tensor, label: torch.Tensor, margin: float) -> torch.Tensor:
    """Hadsell, Chopra & LeCun (CVPR 2006), with TAO's convention ``label = 1`` for a defect pair.

    A good pair is pulled together (``d^2``); a defect pair is pushed to at least ``margin``
    apart (``max(0, margin - d)^2``), and costs nothing once it is there.
    """
    label = label.float()
    pull = (1.0 - label) * distance.pow(2)
    push = label * F.relu(margin - distance).pow(2)
    return (pull + push).mean()


class ClassificationLoss(nn.Module):
    """The loss that goes with the model's output: logits ``(N, 2)`` or distances ``(N,)``."""

    def __init__(self, class_weights: Sequence[float] = (1.0, 10.0), margin: float = 2.0) -> None:
        super().__init__()
        self.register_buffer("class_weights", torch.tensor(list(class_weights), dtype=torch.float32))
        self.margin = float(margin)

    def forward(self, outputs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if outputs.dim() == 2:
            return F.cross_entropy(outputs.float(), label.long(), weight=self.class_weights)
        return contrastive_loss(outputs.float(), label, self.margin)


def mask_on_grid(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, 1, H, W)`` masks in [0, 1] -> the change map's grid: a cell is changed when any of its
    pixels is (max pooling), so a lead one pixel wide still marks the cells it crosses."""
    return F.adaptive_max_pool2d(masks.float(), size)


def change_mask_loss(cells: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """BCE over every cell plus soft dice over the parts with change, for parts that have a mask.

    ``cells``: location change logits ``(N, 1, h, w)``; ``masks``: ``(N, 1, H, W)`` laid out as the
    map (:meth:`~components.models.changenet_classify.model.ChangeNetClassify.arrange_mask`);
    ``has_mask``: ``(N,)`` bools, false for a defect whose pixels are unknown. Dice only where a
    part has change: on a good part it would reward nothing but an all-zero map, which the BCE
    already asks for (the segmentation loss's ``dice_on_good_batches`` lesson).
    """
    keep = has_mask.bool()
    if not bool(keep.any()):
        return cells.sum() * 0.0
    logits = cells[keep].float()
    target = mask_on_grid(masks[keep], tuple(logits.shape[-2:]))
    loss = F.binary_cross_entropy_with_logits(logits, target)
    changed = target.flatten(1).sum(dim=1) > 0
    if bool(changed.any()):
        prob = torch.sigmoid(logits[changed]).flatten(1)
        truth = target[changed].flatten(1)
        dice = 1.0 - (2.0 * (prob * truth).sum(1) + 1.0) / (prob.sum(1) + truth.sum(1) + 1.0)
        loss = loss + dice.mean()
    return loss
