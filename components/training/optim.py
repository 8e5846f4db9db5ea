"""Optimizers and learning-rate policies named in ``segment.train``."""

from __future__ import annotations

import torch
from torch import nn

from components.config import SegmentTrainParams


def parameter_groups(backbone: nn.Module, rest: nn.Module, p: SegmentTrainParams) -> list[dict]:
    """Backbone at ``lr * backbone_lr_scale``, everything else at ``lr``.

    A pretrained backbone needs smaller steps than a freshly initialised decoder: full-size
    steps on ImageNet features wash out what the weights brought in a few hundred iterations.
    """
    backbone_ids = {id(param) for param in backbone.parameters()}
    others = [param for param in rest.parameters() if id(param) not in backbone_ids and param.requires_grad]
    groups = [{"params": others, "lr": p.lr}]
    backbone_params = [param for param in backbone.parameters() if param.requires_grad]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": p.lr * p.backbone_lr_scale})
    return groups


def build_optimizer(parameters: list[nn.Parameter] | list[dict], p: SegmentTrainParams) -> torch.optim.Optimizer:
    """The optimizer named in params; ``parameters`` may be parameter groups with their own ``lr``."""
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
