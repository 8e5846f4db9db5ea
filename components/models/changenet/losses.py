"""Deep-supervision loss for ChangeNet: weighted cross-entropy plus dice on every output.

Deep supervision (Lee et al., "Deeply-Supervised Nets", AISTATS 2015) trains each side output
directly, which speeds up and stabilises the decoder's coarse levels; ChangeFormer and TAO
weight the outputs ``[c4, c3, c2, c1, final]`` with 0.5, 0.5, 0.5, 0.8, 1.0. (TAO's own training
compared a boolean to the string "True" and so trained only the final map; here every output
with a non-zero weight really contributes.)

Defect pixels are rare (about 1.7% on MVTec transistor), so plain cross-entropy learns to
predict "no change". Two standard counter-measures are combined: class-weighted cross-entropy
and soft dice on the change probability (Milletari et al., V-Net, 3DV 2016), which is
insensitive to the class ratio. On a batch of defect-free pairs the pooled dice is
``1 - 1/(1 + sum of change probability)``: its gradient per pixel is ``1/(1 + S)^2``, up to
~10^5 times the cross-entropy's once ``S`` is small, so such batches can pull every change
probability down at once; ``dice_on_good_batches: false`` leaves those batches to the
cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from components.models.changenet.model import OUTPUT_NAMES

if TYPE_CHECKING:
    from components.config import SegmentModelParams, SegmentTrainParams

__all__ = ["DeepSupervisionLoss", "per_image_dice_loss", "soft_dice_loss"]


def per_image_dice_loss(change_prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over the images that contain change of each image's own ``1 - soft dice``.

    Pooled dice weighs a defect by its pixel count, so a bent lead of a few hundred pixels hardly
    moves it next to a misplaced part of thousands; per image, every defect counts the same (the
    small-object remedy of nnU-Net's per-sample dice). A defect-free image has no dice of its own
    (0/0), so it is left to the cross-entropy; a batch with no change at all falls back to the pooled
    dice, which then penalises every false-positive pixel.
    """
    target = target.to(change_prob.dtype)
    has_change = target.flatten(1).sum(dim=1) > 0
    if not bool(has_change.any()):
        return soft_dice_loss(change_prob, target, smooth)
    return 1.0 - _soft_dice(change_prob[has_change].flatten(1), target[has_change].flatten(1), smooth, dim=1).mean()


def _soft_dice(prob: torch.Tensor, target: torch.Tensor, smooth: float, dim: int | None = None) -> torch.Tensor:
    """Smoothed soft dice of ``prob`` against ``target``: summed over ``dim`` (``None``: everything)."""
    intersection = (prob * target).sum(dim=dim)
    return (2.0 * intersection + smooth) / (prob.sum(dim=dim) + target.sum(dim=dim) + smooth)


def soft_dice_loss(change_prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft dice between a change probability map and a {0, 1} mask, pooled over the whole batch.

    Pooling over the batch keeps the loss defined and well-behaved for batches of defect-free
    images, where a per-image dice would be 0/0.
    """
    return 1.0 - _soft_dice(change_prob, target.to(change_prob.dtype), smooth)


DICE_REDUCTIONS = {"batch": soft_dice_loss, "image": per_image_dice_loss}
"""``segment.train.dice_reduction`` -> the dice term it selects."""


class DeepSupervisionLoss(nn.Module):
    """Weighted sum over the five outputs of class-weighted cross-entropy + ``dice_weight`` * dice.

    Each output is bilinearly upsampled to the label size first, so coarse side outputs are
    judged against the full-resolution mask. Class 0 is "no change"; every other class gets
    weight ``change_class_weight`` and counts as change for the dice term.

    Args:
        weights: one weight per output ``[c4, c3, c2, c1, final]``; a zero weight skips that output.
        change_class_weight: cross-entropy weight of the change class(es), background is 1.
        dice_weight: weight of the dice term relative to cross-entropy.
        smooth: dice smoothing.
        dice_reduction: ``batch`` pools the dice over the batch (:func:`soft_dice_loss`); ``image``
            averages each defective image's dice (:func:`per_image_dice_loss`).
        dice_on_good_batches: ``False`` drops the dice term on a batch without a single change pixel,
            where it only pushes probabilities to 0 (the cross-entropy still judges those pixels).
    """

    def __init__(
        self,
        weights: Sequence[float] = (0.5, 0.5, 0.5, 0.8, 1.0),
        change_class_weight: float = 5.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        dice_reduction: str = "batch",
        dice_on_good_batches: bool = True,
    ) -> None:
        super().__init__()
        if dice_reduction not in DICE_REDUCTIONS:
            raise ValueError(f"dice_reduction must be one of {sorted(DICE_REDUCTIONS)}, got {dice_reduction!r}")
        self.dice_reduction = dice_reduction
        self._dice = DICE_REDUCTIONS[dice_reduction]
        self.dice_on_good_batches = bool(dice_on_good_batches)
        if len(weights) != len(OUTPUT_NAMES) or min(weights) < 0:
            raise ValueError(f"weights needs {len(OUTPUT_NAMES)} non-negative values, got {list(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.change_class_weight = float(change_class_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = smooth

    @classmethod
    def from_params(cls, model: SegmentModelParams, train: SegmentTrainParams) -> DeepSupervisionLoss:
        """``weights`` from ``segment.model.loss_weights``, the rest from ``segment.train``."""
        return cls(
            model.loss_weights,
            train.change_class_weight,
            train.dice_weight,
            dice_reduction=train.dice_reduction,
            dice_on_good_batches=train.dice_on_good_batches,
        )

    def forward(
        self, outputs: Sequence[torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the total loss and detached per-output terms (``<output>/ce``, ``<output>/dice``).

        A batch whose dice is skipped (``dice_on_good_batches=False`` and no change pixel) has no
        ``<output>/dice`` terms, so epoch means of the dice average only the batches that used it.

        Args:
            outputs: the model's five logit maps, (N, C, h_i, w_i) each.
            target: (N, H, W) or (N, 1, H, W) class indices; float masks are rounded (TAO's 0/1 masks).
        """
        if len(outputs) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} outputs, got {len(outputs)}")
        if target.dim() == 4:
            target = target[:, 0]
        target = target.round().long() if target.is_floating_point() else target.long()
        num_classes = outputs[0].shape[1]
        class_weights = torch.full((num_classes,), self.change_class_weight, device=target.device)
        class_weights[0] = 1.0
        changed = target > 0
        use_dice = self.dice_on_good_batches or bool(changed.any())

        total = outputs[-1].new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for name, weight, logits in zip(OUTPUT_NAMES, self.weights, outputs, strict=True):
            if weight == 0.0:
                continue  # no graph at all, so this head gets no gradient from the loss
            logits = logits.float()  # sums over ~10^6 pixels: not in half precision
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            ce = F.cross_entropy(logits, target, weight=class_weights)
            total = total + weight * ce
            terms[f"{name}/ce"] = ce.detach()
            if use_dice:
                dice = self._dice(1.0 - logits.softmax(dim=1)[:, 0], changed, self.smooth)
                total = total + weight * self.dice_weight * dice
                terms[f"{name}/dice"] = dice.detach()
        return total, terms
