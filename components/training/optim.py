"""Optimizers and learning-rate policies named in ``segment.train``."""

from __future__ import annotations

import torch
from torch import nn

from components.config import SegmentTrainParams


def build_optimizer(parameters: list[nn.Parameter], p: SegmentTrainParams) -> torch.optim.Optimizer:
    if p.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(parameters, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, nesterov=True)


def build_scheduler(optimizer: torch.optim.Optimizer, p: SegmentTrainParams) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch policies. ``linear`` decays to ``lr/(epochs+1)`` like ChangeFormer/TAO's linear policy."""
    if p.lr_policy == "linear":
        epochs = p.epochs
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 - epoch / float(epochs + 1))
    if p.lr_policy == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=p.lr_step_size, gamma=p.lr_gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=p.epochs, eta_min=p.lr * 0.01)
