"""ChangeFormer-style change decoder with deep supervision, as used by Visual ChangeNet.

Bandara & Patel, "A Transformer-Based Siamese Network for Change Detection" (ChangeFormer,
IGARSS 2022): features of the two images are projected per level, their *difference* is learnt
(a small conv net over the concatenation, rather than a fixed ``|a - b|``, so that nuisance
changes such as lighting can be learnt away), and the per-level difference maps are fused
top-down, supervised at every level and upsampled to full resolution with transposed
convolutions. NVIDIA TAO's Visual ChangeNet-Segmentation keeps this decoder on its FAN backbones.

All resizes take their target size from the tensors, so equal-stride levels (FAN's two
stride-16 levels) are summed without any resampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChangeDecoder",
    "DifferenceModule",
    "FineSkipHead",
    "ResidualBlock",
    "SideHead",
    "resize_like",
    "top_down_differences",
]


def resize_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``x`` to ``like``'s spatial size; no op when they already agree."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def top_down_differences(
    projections: Sequence[nn.Module],
    differences: Sequence[nn.Module],
    feats_a: Sequence[torch.Tensor],
    feats_b: Sequence[torch.Tensor],
    levels: Sequence[int],
) -> list[torch.Tensor]:
    """Learnt difference maps of ``levels`` (coarsest first), each plus the upsampled coarser one.

    Both images go through the same projection of a level (it belongs to the Siamese feature
    extractor); the difference module then sees the two projections side by side. Adding the
    coarser difference map carries context down the pyramid (top-down fusion). Shared by the
    segmentation decoder and the classification head, so both compare features the same way.
    """
    diffs: list[torch.Tensor] = []
    for level in levels:
        proj = projections[level]
        diff = differences[level](torch.cat([proj(feats_a[level]), proj(feats_b[level])], dim=1))
        if diffs:
            diff = diff + resize_like(diffs[-1], diff)
        diffs.append(diff)
    return diffs


class DifferenceModule(nn.Sequential):
    """Learnt difference of two projected feature maps: concat -> conv3x3 -> ReLU -> BN -> conv3x3 -> ReLU."""

    def __init__(self, dim: int) -> None:
        super().__init__(
            _conv3x3(2 * dim, dim),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(dim),
            _conv3x3(dim, dim),
            nn.ReLU(inplace=True),
        )


class SideHead(nn.Sequential):
    """Per-level prediction for deep supervision: conv3x3 -> ReLU -> BN -> conv3x3 to class logits."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__(_conv3x3(dim, dim), nn.ReLU(inplace=True), nn.BatchNorm2d(dim), _conv3x3(dim, num_classes))


class ResidualBlock(nn.Module):
    """Basic residual block (He et al., CVPR 2016) that refines each upsampled map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class FineSkipHead(nn.Module):
    """Classify at stride 2: the fused stride-4 map, upsampled, beside the two images' stride-2 difference.

    A bent or cut lead is 3-5 px wide, about one stride-4 cell, so a classifier at stride 4 whose
    logits are resized loses it. A U-Net skip brings the backbone's stride-2 features back in; as
    everywhere in ChangeNet, the two images' features are projected by one shared 1x1 conv and
    compared by a learnt :class:`DifferenceModule`. Everything at stride 2 is ``fine_dim`` to
    ``2 * fine_dim`` wide, so the head stays a fraction of the backbone's cost.
    """

    def __init__(self, fused_dim: int, fine_channels: int, fine_dim: int, num_classes: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(fine_channels, fine_dim, kernel_size=1)
        self.difference = DifferenceModule(fine_dim)
        self.reduce = nn.Sequential(
            nn.Conv2d(fused_dim, 2 * fine_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(2 * fine_dim),
            nn.ReLU(inplace=True),
        )
        self.refine = nn.Sequential(
            nn.Conv2d(3 * fine_dim, 2 * fine_dim, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(2 * fine_dim),
            nn.ReLU(inplace=True),
        )
        self.classifier = _conv3x3(2 * fine_dim, num_classes)

    def forward(self, fused: torch.Tensor, fine_a: torch.Tensor, fine_b: torch.Tensor) -> torch.Tensor:
        diff = self.difference(torch.cat([self.project(fine_a), self.project(fine_b)], dim=1))
        coarse = resize_like(self.reduce(fused), diff)
        return self.classifier(self.refine(torch.cat([coarse, diff], dim=1)))


class ChangeDecoder(nn.Module):
    """Four-level Siamese change decoder; returns logits ``[c4, c3, c2, c1, final]`` (coarsest first).

    Args:
        in_channels: channels of the four backbone levels, finest first.
        embed_dim: width of the decoder (TAO: 256).
        num_classes: output classes (2 for change / no change).
        upsample_dim: width of the two x2 upsampling stages from stride 4 to full resolution
            (``None``: ``embed_dim``, TAO's decoder). These stages run at 1/4 and all of the
            input's pixels, so at ``embed_dim`` they cost several times the backbone. ``0``:
            no learnt upsampling; the classifier runs on the fused stride-4 map and its logits are
            resized bilinearly (SegFormer's head), the lightest decoder.
        fine_channels: channels of the backbone's stride-2 level; with ``fine_dim`` it feeds a
            :class:`FineSkipHead` that classifies at stride 2 instead of 4 (``upsample_dim: 0`` only).
        fine_dim: width of that skip (0: none).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        embed_dim: int = 256,
        num_classes: int = 2,
        upsample_dim: int | None = None,
        fine_channels: int | None = None,
        fine_dim: int = 0,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"ChangeDecoder needs 4 levels, got {len(in_channels)}")
        if fine_dim and upsample_dim != 0:
            raise ValueError(f"the stride-2 skip (fine_dim {fine_dim}) replaces the light head: needs upsample_dim 0")
        if fine_dim and not fine_channels:
            raise ValueError(f"fine_dim {fine_dim} needs the backbone's stride-2 level (fine_channels)")
        # shared between the two images: a projection is part of the Siamese feature extractor
        self.projections = nn.ModuleList(nn.Conv2d(c, embed_dim, kernel_size=1) for c in in_channels)
        self.differences = nn.ModuleList(DifferenceModule(embed_dim) for _ in in_channels)
        self.side_heads = nn.ModuleList(SideHead(embed_dim, num_classes) for _ in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(len(in_channels) * embed_dim, embed_dim, kernel_size=1, bias=False), nn.BatchNorm2d(embed_dim)
        )
        up = embed_dim if upsample_dim is None else upsample_dim
        self.upsample: nn.Module = (
            nn.Sequential(
                nn.ConvTranspose2d(embed_dim, up, kernel_size=4, stride=2, padding=1),
                ResidualBlock(up),
                nn.ConvTranspose2d(up, up, kernel_size=4, stride=2, padding=1),
                ResidualBlock(up),
            )
            if up > 0
            else nn.Identity()
        )
        self.fine_head: FineSkipHead | None = (
            FineSkipHead(embed_dim, fine_channels, fine_dim, num_classes) if fine_dim and fine_channels else None
        )
        self.classifier: nn.Module | None = None if self.fine_head else _conv3x3(up or embed_dim, num_classes)

    def forward(
        self,
        feats_a: Sequence[torch.Tensor],
        feats_b: Sequence[torch.Tensor],
        out_size: Sequence[int] | None = None,
        fine: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Decode the two images' pyramids (finest first) into five logit maps.

        ``out_size``: (H, W) of the input images; the final map is resized to it when the finest
        level is not at stride 4 (a backbone whose first kept level is coarser).
        ``fine``: the two images' stride-2 maps, which a decoder built with ``fine_dim`` needs.
        """
        levels = list(reversed(range(len(feats_a))))  # coarsest first: top-down fusion
        diffs = top_down_differences(self.projections, self.differences, feats_a, feats_b, levels)
        side = [self.side_heads[level](diff) for level, diff in zip(levels, diffs, strict=True)]
        finest = diffs[-1]
        fused = self.fuse(torch.cat([resize_like(diff, finest) for diff in diffs], dim=1))
        if self.fine_head is not None:
            if fine is None:
                raise ValueError("this decoder has a stride-2 skip (fine_dim): pass the stride-2 maps as fine")
            final = self.fine_head(fused, *fine)
        else:
            assert self.classifier is not None
            final = self.classifier(self.upsample(fused))
        if out_size is not None and tuple(final.shape[-2:]) != tuple(out_size):
            final = F.interpolate(final, size=tuple(out_size), mode="bilinear", align_corners=False)
        return (*side, final)
