"""FAN hybrid backbones (Fully Attentional Networks), written here and registered with timm.

Zhou et al., "Understanding the Robustness in Vision Transformers", ICML 2022 (arXiv:2204.12451)
show that self-attention's grouping of tokens is what makes ViTs robust, and add a *channel*
attention to the MLP so that channels are re-weighted by how well they agree with the salient
tokens. Their "hybrid" variants put two ConvNeXt stages (Liu et al., "A ConvNet for the 2020s",
CVPR 2022) in front of the transformer because convolutional early layers give better local
features for dense tasks; NVIDIA TAO's Visual ChangeNet uses these hybrids as its backbones.

Layout (strides relative to the input):

* ConvNeXt stem (4x4 conv, stride 4) and two ConvNeXt stages (3 and 3 blocks, 3 and 5 for
  large; 128 then 256 channels, strides 4 and 8),
* a 2x2 stride-2 convolution that embeds the stride-8 map as stride-16 tokens,
* Fourier positional encoding (XCiT, El-Nouby et al. 2021) computed for the actual token grid,
  so any input size divisible by 32 works without interpolating a learned table,
* ``depth`` FAN blocks: LayerNorm -> token self-attention -> LayerNorm -> channel processing
  (channel attention with a learned temperature gating an MLP that has a depthwise-conv path),
  each branch with LayerScale (Touvron et al., CaiT, ICCV 2021),
* two class-attention blocks (CaiT) and a final LayerNorm.

The four pyramid levels are stage 1 (stride 4), stage 2 (stride 8), the last FAN block
(stride 16) and the class-attention output (stride 16). For that last level the class token
(global context after class attention) is added to every normalised patch token: otherwise the
class-attention weights would never receive a gradient in a dense task (dead weight, and
DistributedDataParallel would need ``find_unused_parameters``).

Parameter shapes follow the paper's published configurations, so the backbone sizes match the
reported ones (about 7.3M / 25.7M / 50.0M / 76.4M without the classification head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm, LayerNorm2d, LayerScale, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.cait import ClassAttn
from timm.models.convnext import ConvNeXtStage
from torch import nn

__all__ = ["FAN_VARIANTS", "FanHybrid", "FanVariant"]


@dataclass(frozen=True)
class FanVariant:
    """Published size of one FAN hybrid; the name's second number is the paper's label, not the depth."""

    depth: int
    embed_dim: int
    num_heads: int
    convnext_depths: tuple[int, int] = (3, 3)


FAN_VARIANTS: dict[str, FanVariant] = {
    "fan_tiny_8_p4_hybrid": FanVariant(depth=8, embed_dim=192, num_heads=8),
    "fan_small_12_p4_hybrid": FanVariant(depth=10, embed_dim=384, num_heads=8),
    "fan_base_16_p4_hybrid": FanVariant(depth=16, embed_dim=448, num_heads=8),
    # the published large hybrid deepens the second ConvNeXt stage to 5 blocks (76.4M, not 75.3M)
    "fan_large_16_p4_hybrid": FanVariant(depth=22, embed_dim=480, num_heads=10, convnext_depths=(3, 5)),
}

_STAGE_CHANNELS = (128, 256)


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


class FourierPositionalEncoding(nn.Module):
    """Sine/cosine features of normalised (y, x) coordinates projected to ``dim`` by a 1x1 conv.

    Computed on the fly for the current grid (XCiT's choice), which is why FAN needs no
    interpolation of a learned position table when the input size changes.
    """

    def __init__(self, dim: int, num_bands: int = 16, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_bands = num_bands
        self.temperature = temperature
        self.proj = nn.Conv2d(4 * num_bands, dim, kernel_size=1)

    def forward(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """Return a (1, dim, height, width) encoding on ``like``'s device and dtype."""
        device = like.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * (2 * math.pi)
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * (2 * math.pi)
        bands = torch.arange(self.num_bands, device=device, dtype=torch.float32)
        freqs = self.temperature ** (-bands / self.num_bands)  # 1 down to ~1/temperature
        y_angles = ys[:, None] * freqs[None, :]  # (H, F)
        x_angles = xs[:, None] * freqs[None, :]  # (W, F)
        y_feats = torch.cat([y_angles.sin(), y_angles.cos()], dim=1)  # (H, 2F)
        x_feats = torch.cat([x_angles.sin(), x_angles.cos()], dim=1)  # (W, 2F)
        grid = torch.cat(
            [
                y_feats[:, None, :].expand(height, width, 2 * self.num_bands),
                x_feats[None, :, :].expand(height, width, 2 * self.num_bands),
            ],
            dim=2,
        )  # (H, W, 4F)
        grid = grid.permute(2, 0, 1).unsqueeze(0).to(like.dtype)
        return self.proj(grid)


class TokenSelfAttention(nn.Module):
    """Multi-head self-attention over tokens: FAN's token-mixing branch (standard ViT attention)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class DepthwiseConvMlp(nn.Module):
    """MLP whose hidden tokens also pass a depthwise 3x3 conv path, added with a learned scale.

    FAN's value branch: the depthwise path restores the locality a token MLP lacks (as in
    PVTv2, Wang et al. 2022); ``gamma`` lets training decide how much of it to use.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.local = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim),
            nn.GELU(),
            nn.BatchNorm2d(hidden_dim),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim),
        )
        self.gamma = nn.Parameter(torch.ones(hidden_dim))
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        hidden = self.fc1(x)
        local = self.local(tokens_to_map(hidden, height, width)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(hidden + self.gamma * local))


class ChannelAttention(nn.Module):
    """FAN's channel processing: gate each channel of an MLP-processed value by its agreement with salient tokens.

    Per head, every query channel is a distribution over tokens (softmax along tokens); the
    head's token saliency is the channel-average of the softmaxed input. Their inner product
    says how much a channel concentrates on salient tokens. It is multiplied by the token count
    so that it equals 1 for an uninformative (uniform) channel at any resolution, centred, scaled
    by a learned per-head temperature and squashed to a (0, 1) gate.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1))
        self.value_mlp = DepthwiseConvMlp(dim, int(dim * mlp_ratio))
        self.value_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        # (B, heads, head_dim, N): per channel, a distribution over tokens
        q = self.q(x).softmax(dim=1).reshape(batch, tokens, self.num_heads, head_dim).permute(0, 2, 3, 1)
        # (B, heads, N, 1): per head, token saliency
        k = x.reshape(batch, tokens, self.num_heads, head_dim).softmax(dim=1).mean(dim=3).permute(0, 2, 1)
        agreement = torch.matmul(q, k.unsqueeze(-1)).squeeze(-1) * tokens - 1.0  # (B, heads, head_dim)
        gate = torch.sigmoid(agreement * self.temperature).reshape(batch, 1, dim)
        value = self.value_norm(self.value_mlp(x, height, width))
        return value * gate


class FanBlock(nn.Module):
    """One FAN block: token self-attention then channel processing, both pre-norm with LayerScale."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        layer_scale_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TokenSelfAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.channel = ChannelAttention(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
        self.ls2 = LayerScale(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.channel(self.norm2(x), height, width)))


class ClassAttentionBlock(nn.Module):
    """CaiT class attention: only the class token attends (to all tokens) and goes through the MLP.

    Patch tokens are re-normalised (XCiT's ``tokens_norm``) but otherwise passed through, which
    keeps the cost linear in the number of tokens.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, layer_scale_init: float = 1.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttn(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        cls = x[:, :1] + self.ls1(self.attn(normed))
        cls = cls + self.ls2(self.mlp(self.norm2(cls)))
        return torch.cat([cls, normed[:, 1:]], dim=1)


class FanHybrid(nn.Module):
    """FAN hybrid: ConvNeXt stages, then FAN blocks and class attention at stride 16 (see module doc).

    Follows timm's model contract (``feature_info``, ``forward_intermediates``,
    ``prune_intermediate_layers``, ``forward_features``/``forward_head``) so that
    ``timm.create_model(name, features_only=True)`` works like for any timm backbone.
    """

    def __init__(
        self,
        depth: int = 8,
        embed_dim: int = 192,
        num_heads: int = 8,
        convnext_depths: tuple[int, int] = (3, 3),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_cls_blocks: int = 2,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1.0,
        convnext_layer_scale_init: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        c1, c2 = _STAGE_CHANNELS
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c1, kernel_size=4, stride=4), LayerNorm2d(c1))
        self.stages = nn.Sequential(
            ConvNeXtStage(
                c1,
                c1,
                stride=1,
                depth=convnext_depths[0],
                ls_init_value=convnext_layer_scale_init,
                norm_layer=LayerNorm2d,
                norm_layer_cl=LayerNorm,
            ),
            ConvNeXtStage(
                c1,
                c2,
                stride=2,
                depth=convnext_depths[1],
                ls_init_value=convnext_layer_scale_init,
                norm_layer=LayerNorm2d,
                norm_layer_cl=LayerNorm,
            ),
        )
        self.patch_embed = nn.Conv2d(c2, embed_dim, kernel_size=2, stride=2)
        self.pos_embed = FourierPositionalEncoding(embed_dim)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            FanBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_path=rate, layer_scale_init=layer_scale_init)
            for rate in rates
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_blocks = nn.ModuleList(
            ClassAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, layer_scale_init=layer_scale_init)
            for _ in range(num_cls_blocks)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head: nn.Module = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            {"num_chs": c1, "reduction": 4, "module": "stages.0"},
            {"num_chs": c2, "reduction": 8, "module": "stages.1"},
            {"num_chs": embed_dim, "reduction": 16, "module": f"blocks.{depth - 1}"},
            {"num_chs": embed_dim, "reduction": 16, "module": "norm"},
        ]
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_transformer_weights)

    @staticmethod
    def _init_transformer_weights(module: nn.Module) -> None:
        # ViT practice: small truncated-normal linear weights, zero biases
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def _pyramid(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """All four pyramid maps and the final normalised class token."""
        s1 = self.stages[0](self.stem(x))
        s2 = self.stages[1](s1)
        grid = self.patch_embed(s2)
        height, width = grid.shape[-2], grid.shape[-1]
        grid = grid + self.pos_embed(height, width, grid)
        tokens = grid.flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens, height, width)
        s3 = tokens_to_map(tokens, height, width)
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for block in self.cls_blocks:
            x = block(x)
        x = self.norm(x)
        cls = x[:, :1]
        s4 = tokens_to_map(x[:, 1:] + cls, height, width)
        return [s1, s2, s3, s4], cls[:, 0]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the selected pyramid maps (NCHW), optionally with the final class token.

        ``norm`` and ``stop_early`` are accepted for API compatibility; the last level is always
        normalised and every level needs the full forward pass anyway.
        """
        if output_fmt != "NCHW":
            raise ValueError("FanHybrid only returns NCHW features")
        take, _ = feature_take_indices(len(self.feature_info), indices)
        maps, cls = self._pyramid(x)
        selected = [maps[i] for i in take]
        return selected if intermediates_only else (cls, selected)

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 4, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the classifier (the only part a feature extractor never uses); return absolute indices."""
        take, _ = feature_take_indices(len(self.feature_info), indices)
        if prune_head:
            self.head = nn.Identity()
            self.num_classes = 0
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._pyramid(x)[1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # No hosted weights: ``pretrained=True`` has nothing to download (pretrained.py says so clearly).
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0",
        "classifier": "head",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in FAN_VARIANTS})


def _create_fan(variant: str, pretrained: bool = False, **kwargs: Any) -> FanHybrid:
    spec = FAN_VARIANTS[variant]
    model_args = {
        "depth": spec.depth,
        "embed_dim": spec.embed_dim,
        "num_heads": spec.num_heads,
        "convnext_depths": spec.convnext_depths,
        **kwargs,
    }
    return build_model_with_cfg(
        FanHybrid,
        variant,
        pretrained,
        feature_cfg={"feature_cls": "getter", "out_indices": (0, 1, 2, 3)},
        **model_args,
    )


@register_model
def fan_tiny_8_p4_hybrid(pretrained: bool = False, **kwargs: Any) -> FanHybrid:
    """FAN-Tiny hybrid: 8 FAN blocks, 192 channels, 8 heads."""
    return _create_fan("fan_tiny_8_p4_hybrid", pretrained, **kwargs)


@register_model
def fan_small_12_p4_hybrid(pretrained: bool = False, **kwargs: Any) -> FanHybrid:
    """FAN-Small hybrid: 10 FAN blocks, 384 channels, 8 heads."""
    return _create_fan("fan_small_12_p4_hybrid", pretrained, **kwargs)


@register_model
def fan_base_16_p4_hybrid(pretrained: bool = False, **kwargs: Any) -> FanHybrid:
    """FAN-Base hybrid: 16 FAN blocks, 448 channels, 8 heads."""
    return _create_fan("fan_base_16_p4_hybrid", pretrained, **kwargs)


@register_model
def fan_large_16_p4_hybrid(pretrained: bool = False, **kwargs: Any) -> FanHybrid:
    """FAN-Large hybrid: 22 FAN blocks, 480 channels, 10 heads."""
    return _create_fan("fan_large_16_p4_hybrid", pretrained, **kwargs)
