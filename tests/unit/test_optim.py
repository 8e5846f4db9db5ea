"""Optimizer parameter groups and LR policies."""

from __future__ import annotations

import itertools

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
    params = SegmentTrainParams(lr=1e-3, backbone_lr_scale=0.5, epochs=3, warmup_ratio=0.0)
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


def _lrs(params: SegmentTrainParams, steps_per_epoch: int, steps: int) -> list[float]:
    model = _TwoPart()
    optimizer = build_optimizer(list(model.parameters()), params)
    scheduler = build_scheduler(optimizer, params, steps_per_epoch)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_per_step_linear_policy_meets_the_per_epoch_policy_at_epoch_boundaries() -> None:
    params = SegmentTrainParams(lr=1.0, epochs=4, lr_policy="linear", warmup_ratio=0.0)
    lrs = _lrs(params, steps_per_epoch=10, steps=40)
    for epoch in range(4):
        assert abs(lrs[10 * epoch] - (1.0 - epoch / 5.0)) < 1e-9
    assert all(a > b for a, b in itertools.pairwise(lrs))  # smooth, strictly decreasing


def test_warmup_ramps_linearly_then_follows_the_policy() -> None:
    params = SegmentTrainParams(lr=1.0, epochs=2, lr_policy="step", lr_step_size=1, lr_gamma=0.5, warmup_ratio=0.4)
    lrs = _lrs(params, steps_per_epoch=5, steps=10)
    assert [round(x, 6) for x in lrs[:5]] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lrs[5:] == [0.5] * 5


def test_cosine_policy_ends_at_one_percent() -> None:
    params = SegmentTrainParams(lr=1.0, epochs=2, lr_policy="cosine", warmup_ratio=0.0)
    lrs = _lrs(params, steps_per_epoch=3, steps=7)
    assert lrs[0] == 1.0 and abs(lrs[6] - 0.01) < 1e-9
