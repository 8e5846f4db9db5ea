"""Optimizer parameter groups and LR policies."""

from __future__ import annotations

import torch
from torch import nn

from components.config import SegmentTrainParams
from components.training.optim import build_optimizer, build_scheduler, parameter_groups


class _TwoPart(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)


def test_backbone_gets_the_scaled_lr_and_every_parameter_is_in_exactly_one_group() -> None:
    model = _TwoPart()
    params = SegmentTrainParams(lr=1e-3, backbone_lr_scale=0.1, epochs=4)
    optimizer = build_optimizer(parameter_groups(model.backbone, model, params), params)
    head_group, backbone_group = optimizer.param_groups
    assert head_group["lr"] == 1e-3 and abs(backbone_group["lr"] - 1e-4) < 1e-12
    ids = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert {id(p) for p in backbone_group["params"]} == {id(p) for p in model.backbone.parameters()}


def test_linear_policy_decays_both_groups_in_proportion() -> None:
    model = _TwoPart()
    params = SegmentTrainParams(lr=1e-3, backbone_lr_scale=0.5, epochs=3)
    optimizer = build_optimizer(parameter_groups(model.backbone, model, params), params)
    scheduler = build_scheduler(optimizer, params)
    optimizer.step()
    scheduler.step()
    head, backbone = (group["lr"] for group in optimizer.param_groups)
    assert abs(head - 1e-3 * 0.75) < 1e-12 and abs(backbone - 0.5e-3 * 0.75) < 1e-12


def test_frozen_backbone_parameters_are_left_out() -> None:
    model = _TwoPart()
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    groups = parameter_groups(model.backbone, model, SegmentTrainParams())
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.parameters()}
    assert torch.is_tensor(groups[0]["params"][0])
