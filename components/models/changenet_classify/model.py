"""Visual ChangeNet-Classification: is this part good? From its test and golden images under several lights.

The Siamese idea of the segmentation model (one backbone with shared weights embeds the test
image and its golden, and only their *difference* is judged), with an image-level answer:

- **Lights.** A part is photographed under ``L`` lighting conditions. On the wire both images
  are TAO's linear layout, the lights stacked vertically, ``(N, 3, L*H, W)``; the model then
  arranges them as configured (``concat_type``): ``linear`` keeps the stack, ``grid`` tiles the
  lights ``x`` by ``y`` (TAO's two ways), and ``fused`` runs each light through the backbone
  alone and fuses the per-light features with a learnt 1x1 convolution (initialised to their
  mean). Every head pools, so no layer is sized to the input: the same weights run at any
  resolution, unlike TAO's flatten-then-linear heads.
- **Goldens.** With ``G > 1`` goldens per part (``(N, G, 3, L*H, W)``) every golden is embedded
  and the goldens are combined per pyramid level before the comparison: their ``mean``, or
  ``attention`` from the test features (a per-location softmax over the goldens of the scaled dot
  product with the test feature, so each location compares against the goldens that look like
  it). Deterministic, unlike TAO's random golden draws at evaluation time.
- **Difference modules** (TAO's two): ``learnable`` uses the ChangeNet projections, difference
  modules and top-down fusion of the segmentation decoder on the coarsest
  ``learnable_difference_modules`` levels, then turns the fused map into [PASS, defect] logits:
  ``pooling="meanmax"`` pools it (mean and max) into a small MLP; ``pooling="topk"`` scores
  every location for change and averages the highest ``topk_fraction`` of them into the defect
  logit (multiple-instance pooling: a defect a few cells wide decides the part, where a mean
  would dilute it). Those location scores are a coarse change map, which training can supervise
  with the part's mask where one exists (``classify.train.mask_loss_weight``). With
  ``change_map="decoder"`` the map is the segmentation model's decoder instead (all four levels
  and a stride-2 skip, with side outputs for deep supervision), so a defect a few pixels wide has
  cells of its own. ``euclidean``
  embeds each image (pooled coarsest features, an MLP, ``embedding_vectors`` numbers) and
  returns the distance between the test and golden embeddings, trained with a contrastive loss.

Inputs are floats in [0, 1]; normalisation is inside the model (buffers), as in the
segmentation model, so an exported graph takes raw pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from components.models.backbones.pyramid import FeaturePyramid, PretrainedSource, build_backbone
from components.models.changenet.decoder import ChangeDecoder, DifferenceModule, resize_like, top_down_differences

if TYPE_CHECKING:
    from components.config import ClassifyModelParams

__all__ = [
    "ONNX_INPUT_NAMES",
    "ONNX_OUTPUT_NAMES",
    "ChangeNetClassify",
    "DecoderDifference",
    "defect_score",
    "stack_lights",
    "topk_mean",
    "unstack_lights",
]

ONNX_INPUT_NAMES: tuple[str, str] = ("input_1", "input_2")
"""TAO's export names: ``input_1`` the test image(s), ``input_2`` the golden(s)."""
ONNX_OUTPUT_NAMES: tuple[str] = ("output",)

DifferenceKind = Literal["learnable", "euclidean"]
ConcatType = Literal["linear", "grid", "fused"]
GoldenFusion = Literal["mean", "attention"]
Pooling = Literal["meanmax", "topk"]
ChangeMap = Literal["coarse", "decoder"]


def stack_lights(images: torch.Tensor) -> torch.Tensor:
    """``(..., L, 3, H, W)`` -> TAO's linear layout ``(..., 3, L*H, W)`` (lights top to bottom)."""
    *lead, lights, channels, height, width = images.shape
    rank = images.dim()  # positive dims: the ONNX exporter writes negative ones into Transpose as they are
    moved = images.movedim(rank - 4, rank - 3)  # (..., 3, L, H, W)
    return moved.reshape(*lead, channels, lights * height, width)


def unstack_lights(images: torch.Tensor, lights: int) -> torch.Tensor:
    """TAO's linear layout ``(..., 3, L*H, W)`` -> ``(..., L, 3, H, W)``."""
    *lead, channels, total_height, width = images.shape
    if total_height % lights:
        raise ValueError(f"image height {total_height} is not {lights} stacked lights of equal height")
    split = images.reshape(*lead, channels, lights, total_height // lights, width)
    rank = split.dim()
    return split.movedim(rank - 3, rank - 4)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Mean and max over the map, concatenated: ``(N, C, h, w)`` -> ``(N, 2C)``."""
    return torch.cat([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))], dim=1)


class LightFusion(nn.Module):
    """Fuse ``L`` per-light maps of one level into one: a 1x1 conv over their concatenation.

    Initialised to the plain mean of the lights, so training starts from "every light counts
    the same" and learns which light shows what.
    """

    def __init__(self, channels: int, lights: int) -> None:
        super().__init__()
        self.lights = lights
        self.mix = nn.Conv2d(lights * channels, channels, kernel_size=1, bias=False)
        with torch.no_grad():
            eye = torch.eye(channels).repeat(1, lights) / lights  # (C, L*C)
            self.mix.weight.copy_(eye.view(channels, lights * channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N*L, C, h, w)`` (lights of a part adjacent) -> ``(N, C, h, w)``."""
        total, channels, height, width = x.shape
        return self.mix(x.reshape(total // self.lights, self.lights * channels, height, width))


def combine_goldens(test: torch.Tensor, goldens: torch.Tensor, mode: GoldenFusion) -> torch.Tensor:
    """One golden map ``(N, C, h, w)`` from ``G`` goldens ``(N, G, C, h, w)``.

    ``attention``: at each location, a softmax over the goldens of ``<test, golden> / sqrt(C)``
    weighs them, so the comparison leans on the goldens that look most like the test there.
    """
    if goldens.shape[1] == 1:
        return goldens[:, 0]
    if mode == "mean":
        return goldens.mean(dim=1)
    scale = goldens.shape[2] ** -0.5
    weights = torch.softmax((goldens * test.unsqueeze(1)).sum(dim=2, keepdim=True) * scale, dim=1)
    return (weights * goldens).sum(dim=1)


def topk_mean(cells: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the ``fraction`` highest of ``(N, 1, h, w)`` location scores -> ``(N,)`` (at least one)."""
    flat = cells.flatten(1)
    locations = int(flat.shape[1])  # a constant in an exported graph: only the batch axis is dynamic
    k = max(1, round(fraction * locations))
    return flat.topk(k, dim=1).values.mean(dim=1)


class LearnableDifference(nn.Module):
    """TAO's ``learnable`` module: ChangeNet differences of the coarsest levels, fused, then a verdict.

    ``pooling="meanmax"`` pools the fused map (mean and max) into a 2-class MLP.
    ``pooling="topk"`` scores each location of the fused map (a 1x1 convolution: a change map at
    the finest compared stride) and takes the mean of the top ``topk_fraction`` locations as the
    defect logit, so a defect covering a few cells is not averaged away; the logits are then
    ``[0, s]``, whose softmax is ``sigmoid(s)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        levels: int,
        embed_dim: int,
        hidden: int,
        pooling: Pooling = "meanmax",
        topk_fraction: float = 0.02,
    ) -> None:
        super().__init__()
        self.levels = list(reversed(range(len(in_channels))))[:levels]  # coarsest first
        self.projections = nn.ModuleList(nn.Conv2d(c, embed_dim, kernel_size=1) for c in in_channels)
        self.differences = nn.ModuleList(DifferenceModule(embed_dim) for _ in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(levels * embed_dim, embed_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.pooling = pooling
        self.topk_fraction = float(topk_fraction)
        self.head: nn.Module
        if pooling == "meanmax":
            self.head = nn.Sequential(nn.Linear(2 * embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))
        elif pooling == "topk":
            self.head = nn.Conv2d(embed_dim, 1, kernel_size=1)
        else:
            raise ValueError(f"pooling must be meanmax or topk, got {pooling!r}")

    def fused(self, test: Sequence[torch.Tensor], golden: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fused difference map ``(N, embed_dim, h, w)`` at the finest compared level."""
        diffs = top_down_differences(self.projections, self.differences, test, golden, self.levels)
        finest = diffs[-1]
        return self.fuse(torch.cat([resize_like(d, finest) for d in diffs], dim=1))

    map_weights: tuple[float, ...] = (1.0,)
    """Weight of each map of :meth:`forward_with_map` in the auxiliary mask loss."""

    def forward_with_map(
        self, test: Sequence[torch.Tensor], golden: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Class logits ``(N, 2)`` and, for ``topk``, the location change logits ``((N, 1, h, w),)``."""
        fused = self.fused(test, golden)
        if self.pooling == "meanmax":
            return self.head(_pool(fused)), ()
        cells = self.head(fused)
        return _defect_logits(topk_mean(cells, self.topk_fraction)), (cells,)

    def forward(self, test: Sequence[torch.Tensor], golden: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class logits ``(N, 2)``: [PASS, defect]."""
        return self.forward_with_map(test, golden)[0]


def _defect_logits(score: torch.Tensor) -> torch.Tensor:
    """``(N,)`` defect logits -> class logits ``[0, s]`` ``(N, 2)``, whose softmax is ``sigmoid(s)``.

    A zero column padded in front, not ``cat([zeros_like(s), s])``: the ONNX exporter folds that
    zeros tensor to the export batch size when shape inference knows it (the decoder's graph), and
    the exported model then fails at any other batch size.
    """
    return F.pad(score.unsqueeze(1), (1, 0))


class DecoderDifference(nn.Module):
    """The segmentation model's change decoder as the verdict's change map (``change_map: decoder``).

    All four levels are compared and fused top-down, and a stride-2 skip (``fine_dim``) classifies
    each location at stride 2: the map a bent lead a few pixels wide survives in, where the coarse
    head's stride-8 cells average it with its surroundings. Each map is a change logit per
    location; the defect logit is the mean of the top ``topk_fraction`` locations of the finest
    (multiple-instance pooling, as ``pooling: topk``). The decoder's side outputs (strides 32 to 4)
    are returned with it so the mask loss supervises every level, as the segmentation loss does.
    """

    map_weights: tuple[float, ...] = (0.5, 0.5, 0.5, 0.8, 1.0)
    """The segmentation loss's deep-supervision weights, coarsest side output first (``segment.model.loss_weights``)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        fine_channels: int | None,
        embed_dim: int,
        fine_dim: int,
        topk_fraction: float,
    ) -> None:
        super().__init__()
        self.topk_fraction = float(topk_fraction)
        self.decoder = ChangeDecoder(
            in_channels, embed_dim, num_classes=1, upsample_dim=0, fine_channels=fine_channels, fine_dim=fine_dim
        )

    def forward_with_map(
        self, test: Sequence[torch.Tensor], golden: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Class logits ``(N, 2)`` and the change logit maps, coarsest first (the finest at stride 2 or 4)."""
        fine = None
        if self.decoder.fine_head is not None:  # the stride-2 level comes first in the pyramid
            fine = (test[0], golden[0])
            test, golden = test[1:], golden[1:]
        maps = self.decoder(test, golden, fine=fine)
        return _defect_logits(topk_mean(maps[-1], self.topk_fraction)), tuple(maps)

    def forward(self, test: Sequence[torch.Tensor], golden: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class logits ``(N, 2)``: [PASS, defect]."""
        return self.forward_with_map(test, golden)[0]


class EuclideanDifference(nn.Module):
    """TAO's ``euclidean`` module: an embedding per image; the output is their distance."""

    def __init__(self, channels: int, embedding: int, hidden: int = 512) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Linear(2 * channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embedding),
        )

    def forward(self, test: Sequence[torch.Tensor], golden: Sequence[torch.Tensor]) -> torch.Tensor:
        """Distances ``(N,)`` between the embeddings of the coarsest level."""
        return F.pairwise_distance(self.embed(_pool(test[-1])), self.embed(_pool(golden[-1])))


class ChangeNetClassify(nn.Module):
    """Pass/defect from a test and its golden image(s) under ``num_lights`` lighting conditions.

    Args mirror :class:`components.config.ClassifyModelParams`; ``num_lights`` comes from
    ``data.lighting_conditions``. ``forward`` returns logits ``(N, 2)`` (learnable) or
    distances ``(N,)`` (euclidean); :func:`defect_score` turns either into a score where
    higher means more likely defect.
    """

    def __init__(
        self,
        num_lights: int = 1,
        backbone: str = "tf_efficientnet_lite0",
        difference_module: DifferenceKind = "learnable",
        concat_type: ConcatType = "linear",
        grid_map: tuple[int, int] = (2, 2),
        learnable_difference_modules: int = 4,
        embed_dim: int = 64,
        embed_dec: int = 32,
        embedding_vectors: int = 5,
        golden_fusion: GoldenFusion = "mean",
        pooling: Pooling = "meanmax",
        topk_fraction: float = 0.02,
        change_map: ChangeMap = "coarse",
        fine_dim: int = 16,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        pretrained: PretrainedSource = "none",
        pretrained_backbone_path: Path | str | None = None,
        strict_load: bool = True,
    ) -> None:
        super().__init__()
        if num_lights < 1:
            raise ValueError(f"num_lights must be >= 1, got {num_lights}")
        if concat_type == "grid" and grid_map[0] * grid_map[1] != num_lights:
            raise ValueError(f"grid_map {grid_map[0]}x{grid_map[1]} does not hold {num_lights} lights")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each with std > 0, got {mean}, {std}")
        self.num_lights = num_lights
        self.concat_type = concat_type
        self.grid_map = (int(grid_map[0]), int(grid_map[1]))
        self.difference_module = difference_module
        self.golden_fusion = golden_fusion
        if change_map not in ("coarse", "decoder"):
            raise ValueError(f"change_map must be coarse or decoder, got {change_map!r}")
        decoder = difference_module == "learnable" and change_map == "decoder"
        if decoder and pooling != "topk":
            raise ValueError(f"change_map: decoder pools its change map with pooling: topk, got {pooling!r}")
        self.backbone: FeaturePyramid = build_backbone(
            backbone, pretrained, pretrained_backbone_path, strict_load, fine_level=decoder and fine_dim > 0
        )
        channels = self.backbone.channels
        fine_channels = self.backbone.fine_channels
        levels = [fine_channels, *channels] if fine_channels is not None else list(channels)
        self.light_fusion = (
            nn.ModuleList(LightFusion(c, num_lights) for c in levels)
            if concat_type == "fused" and num_lights > 1
            else None
        )
        self.head: nn.Module
        if decoder:
            self.head = DecoderDifference(channels, fine_channels, embed_dim, fine_dim, topk_fraction)
        elif difference_module == "learnable":
            self.head = LearnableDifference(
                channels, learnable_difference_modules, embed_dim, embed_dec, pooling, topk_fraction
            )
        elif difference_module == "euclidean":
            self.head = EuclideanDifference(channels[-1], embedding_vectors)
        else:
            raise ValueError(f"difference_module must be learnable or euclidean, got {difference_module!r}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @classmethod
    def from_params(cls, params: ClassifyModelParams, num_lights: int) -> ChangeNetClassify:
        """Build from the validated ``classify.model`` section and the number of lights."""
        return cls(
            num_lights=num_lights,
            backbone=params.backbone,
            difference_module=params.difference_module,
            concat_type=params.concat_type,
            grid_map=(params.grid_map.x, params.grid_map.y),
            learnable_difference_modules=params.learnable_difference_modules,
            embed_dim=params.embed_dim,
            embed_dec=params.embed_dec,
            embedding_vectors=params.embedding_vectors,
            golden_fusion=params.golden_fusion,
            pooling=params.pooling,
            topk_fraction=params.topk_fraction,
            change_map=params.change_map,
            fine_dim=params.fine_dim,
            mean=params.mean,
            std=params.std,
            pretrained=params.pretrained,
            pretrained_backbone_path=params.pretrained_backbone_path,
            strict_load=params.strict_load,
        )

    def arrange(self, images: torch.Tensor) -> torch.Tensor:
        """Linear-layout images ``(M, 3, L*H, W)`` as the backbone sees them (see the module docstring)."""
        if self.concat_type == "linear" or self.num_lights == 1:
            return images
        lights = unstack_lights(images, self.num_lights)  # (M, L, 3, H, W)
        if self.concat_type == "fused":
            return lights.flatten(0, 1)  # (M*L, 3, H, W), the lights of one image adjacent
        x, y = self.grid_map
        batch, _, channels, height, width = lights.shape
        grid = lights.reshape(batch, y, x, channels, height, width).permute(0, 3, 1, 4, 2, 5)
        return grid.reshape(batch, channels, y * height, x * width)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone pyramid (finest first) of ``(M, 3, L*H, W)`` images in [0, 1]."""
        pyramid = self.backbone(self.arrange((images - self.mean) / self.std))
        if self.light_fusion is not None:
            pyramid = [fuse(level) for fuse, level in zip(self.light_fusion, pyramid, strict=True)]
        return pyramid

    def _compared(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Test and (combined) golden pyramids; the test image and all goldens in one backbone batch."""
        goldens = golden.unsqueeze(1) if golden.dim() == 4 else golden
        if goldens.dim() != 5 or test.dim() != 4 or goldens.shape[0] != test.shape[0]:
            raise ValueError(f"expected test (N,3,H,W) and golden (N,[G,]3,H,W), got {test.shape}, {golden.shape}")
        batch, count = test.shape[0], goldens.shape[1]
        images = torch.cat([test.unsqueeze(1), goldens], dim=1).flatten(0, 1)  # (N*(1+G), 3, LH, W)
        pyramid = [level.unflatten(0, (batch, 1 + count)) for level in self.features(images)]
        test_feats = [level[:, 0] for level in pyramid]
        golden_feats = [
            combine_goldens(t, level[:, 1:], self.golden_fusion) for t, level in zip(test_feats, pyramid, strict=True)
        ]
        return test_feats, golden_feats

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """``test`` ``(N, 3, L*H, W)``; ``golden`` the same or ``(N, G, 3, L*H, W)``."""
        return self.head(*self._compared(test, golden))

    def forward_with_map(
        self, test: torch.Tensor, golden: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Logits and the change logit maps ``(N, 1, h, w)``, coarsest first (none unless ``pooling: topk``).

        The maps are laid out as the backbone saw the part (see :meth:`arrange_mask`);
        :attr:`map_weights` weighs them in the mask loss.
        """
        if not isinstance(self.head, LearnableDifference | DecoderDifference):
            return self.forward(test, golden), ()
        return self.head.forward_with_map(*self._compared(test, golden))

    @property
    def map_weights(self) -> tuple[float, ...]:
        """Mask-loss weight of each map :meth:`forward_with_map` returns."""
        return getattr(self.head, "map_weights", ())

    def arrange_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """Change masks in the linear layout ``(N, 1, L*H, W)`` laid out as the change map is.

        ``linear`` and ``grid`` arrange them as the images; ``fused`` fuses the lights before the
        comparison, so the map covers one light's frame (the part's mask is the same under every light).
        """
        if self.concat_type == "fused" and self.num_lights > 1:
            return unstack_lights(masks, self.num_lights)[:, 0]
        return self.arrange(masks)


def defect_score(outputs: torch.Tensor) -> torch.Tensor:
    """Higher = more likely defect: the defect probability of logits ``(N, 2)``, or a distance ``(N,)``."""
    if outputs.dim() == 2:
        return torch.softmax(outputs.float(), dim=1)[:, 1]
    return outputs.float()
