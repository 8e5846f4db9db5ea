"""Losses of the two difference modules: weighted cross-entropy (learnable) and contrastive (euclidean)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationLoss", "contrastive_loss"]


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
