"""Visual ChangeNet-Segmentation: a Siamese backbone and a change decoder, in pure torch.

The model compares a test image with a defect-free "golden" image of the same part and
segments what differs (NVIDIA TAO Visual ChangeNet; decoder after ChangeFormer, Bandara & Patel
2022). One backbone with shared weights embeds both images (a Siamese network, Bromley et al.
1993), so both land in the same feature space and the decoder only has to learn differences.

Inputs are plain float images in [0, 1]; the model normalises them itself with registered
buffers, so the exported ONNX graph contains the normalisation and a caller feeds raw pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from components.models.backbones.pyramid import FeaturePyramid, PretrainedSource, build_backbone
from components.models.changenet.decoder import ChangeDecoder

if TYPE_CHECKING:
    from components.config import SegmentModelParams

__all__ = ["ONNX_INPUT_NAMES", "ONNX_OUTPUT_NAMES", "OUTPUT_NAMES", "ChangeNetSegment"]

OUTPUT_NAMES: tuple[str, ...] = ("c4", "c3", "c2", "c1", "final")
"""The five outputs, coarsest side output first, full-resolution prediction last."""
ONNX_INPUT_NAMES: tuple[str, str] = ("input0", "input1")
ONNX_OUTPUT_NAMES: tuple[str, ...] = ("output0", "output1", "output2", "output3", "output_final")
"""TAO's export names (test image = input0, golden = input1), kept so TAO-style consumers work."""


class ChangeNetSegment(nn.Module):
    """Segment the changes between a test image and its golden reference.

    Args mirror :class:`components.config.SegmentModelParams` (``loss_weights`` belongs to the
    loss, see :class:`~components.models.changenet.losses.DeepSupervisionLoss`):

    Args:
        backbone: timm model name or a FAN hybrid (see :func:`build_backbone`).
        embed_dim: decoder width.
        upsample_dim: width of the decoder's full-resolution stages (``None``: ``embed_dim``, TAO).
        fine_dim: width of the light head's stride-2 skip (0: none; needs ``upsample_dim=0``).
        num_classes: output classes (2: unchanged / changed).
        mean, std: per-channel normalisation applied inside the model to [0, 1] inputs.
        pretrained: ``none`` | ``package`` | ``path`` | ``hub`` (see :func:`build_backbone`).
        pretrained_backbone_path: checkpoint for ``pretrained="path"``.
        strict_load: fail on any key mismatch when loading ``pretrained_backbone_path``.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        embed_dim: int = 256,
        num_classes: int = 2,
        upsample_dim: int | None = None,
        fine_dim: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        pretrained: PretrainedSource = "none",
        pretrained_backbone_path: Path | str | None = None,
        strict_load: bool = True,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each with std > 0, got {mean}, {std}")
        self.backbone: FeaturePyramid = build_backbone(
            backbone, pretrained, pretrained_backbone_path, strict_load, fine_level=fine_dim > 0
        )
        self.decoder = ChangeDecoder(
            self.backbone.channels,
            embed_dim=embed_dim,
            num_classes=num_classes,
            upsample_dim=upsample_dim,
            fine_channels=self.backbone.fine_channels,
            fine_dim=fine_dim,
        )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.num_classes = num_classes

    @classmethod
    def from_params(cls, params: SegmentModelParams) -> ChangeNetSegment:
        """Build from the validated ``segment.model`` section of ``params.yaml``."""
        return cls(
            backbone=params.backbone,
            embed_dim=params.embed_dim,
            num_classes=params.num_classes,
            upsample_dim=params.upsample_dim,
            fine_dim=params.fine_dim,
            mean=params.mean,
            std=params.std,
            pretrained=params.pretrained,
            pretrained_backbone_path=params.pretrained_backbone_path,
            strict_load=params.strict_load,
        )

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits ``(c4, c3, c2, c1, final)`` for (N, 3, H, W) images in [0, 1]; H, W divisible by 32.

        Both images go through the shared backbone in one batch (one pass, one set of weights).
        """
        batch = test.shape[0]
        pair = (torch.cat([test, golden], dim=0) - self.mean) / self.std
        feats = self.backbone(pair)
        fine = None
        if self.backbone.fine_channels is not None:  # the stride-2 level comes first
            fine = (feats[0][:batch], feats[0][batch:])
            feats = feats[1:]
        feats_test = [f[:batch] for f in feats]
        feats_golden = [f[batch:] for f in feats]
        return self.decoder(feats_test, feats_golden, out_size=test.shape[-2:], fine=fine)

    @torch.no_grad()
    def predict(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """Full-resolution logits (N, num_classes, H, W) only; no gradients."""
        return self.forward(test, golden)[-1]
