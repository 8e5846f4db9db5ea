"""Optimizers and learning-rate policies of a family's ``train`` section (:class:`TrainLoopParams`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from components.config import TrainLoopParams


def parameter_groups(backbone: nn.Module, rest: nn.Module, p: TrainLoopParams) -> list[dict]:
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


def build_optimizer(parameters: list[nn.Parameter] | list[dict], p: TrainLoopParams) -> torch.optim.Optimizer:
    """The optimizer named in params; ``parameters`` may be parameter groups with their own ``lr``."""
    if p.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(parameters, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, nesterov=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, p: TrainLoopParams, steps_per_epoch: int = 1
) -> torch.optim.lr_scheduler.LRScheduler:
    """The ``lr_policy``, stepped every batch (Lightning ``interval: step``), after a linear warm-up.

    Each policy is a function of the (fractional) epoch, so with ``steps_per_epoch = 1`` it is
    the per-epoch policy of ChangeFormer/TAO: ``linear`` decays to ``lr/(epochs+1)``, ``step``
    multiplies by ``lr_gamma`` every ``lr_step_size`` epochs, ``cosine`` anneals to ``lr/100``.
    Stepping per batch spreads the decay smoothly over short CPU runs of a few epochs, and the
    warm-up (the first ``warmup_ratio`` of all steps, as a share so that it means the same on
    a 59-pair demo set and on 212 transistor pairs) ramps the LR up linearly, so the first
    updates from a randomly initialised decoder do not wreck the pretrained backbone.
    """
    steps_per_epoch = max(1, steps_per_epoch)
    epochs = float(p.epochs)
    warmup = round(p.warmup_ratio * steps_per_epoch * p.epochs)

    def factor(step: int) -> float:
        progress = step / steps_per_epoch
        if p.lr_policy == "linear":
            value = 1.0 - progress / (epochs + 1.0)
        elif p.lr_policy == "step":
            value = p.lr_gamma ** math.floor(progress / p.lr_step_size)
        else:
            value = 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(progress, epochs) / epochs))
        return max(value, 0.0) * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
