"""MAL's two box-supervised losses: multiple-instance projection (MIL) and a mean-field CRF.

MAL learns masks from boxes alone (Lan et al., CVPR 2023, section 3.3):

- **MIL loss** (:func:`mil_projection_loss`): every row and column of the crop that crosses
  the box contains at least one object pixel (a positive bag), every row and column of the
  margin outside the box contains none (a negative bag). Taking the max of the predicted mask
  along each row/column and comparing it with the same max of the box mask (a dice loss)
  enforces exactly that, the projection term also used by BoxInst (Tian et al., CVPR 2021).
- **CRF loss** (:func:`crf_loss`): the MIL loss is satisfied by any mask whose projections fill
  the box, e.g. the box itself. The CRF term pulls the mask toward colour edges: a mean-field
  refinement (:func:`mean_field`) of the student/teacher prediction, in which neighbouring
  pixels of similar colour (:func:`color_affinity`) vote for the same label, gives a hard
  pseudo-mask that the student is trained to match.

All functions take *probabilities* (after sigmoid), shaped ``[B, 1, H, W]``, at the logit
resolution. Pure torch: no Lightning here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "color_affinity",
    "crf_loss",
    "dice_loss",
    "linear_ramp",
    "mean_field",
    "mil_projection_loss",
]

_DICE_EPS = 0.001  # added to each of the two squared sums, as in the paper's code


def dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample dice loss in the V-Net form (Milletari et al., 3DV 2016): ``[B]``.

    ``1 - 2 sum(p t) / (sum(p^2) + 0.001 + sum(t^2) + 0.001)`` over every non-batch dimension.
    The squares (not plain sums) are what the paper's code uses; they make the loss of a soft
    prediction depend on how confident it is, not only on its total mass.
    """
    p = pred.reshape(pred.shape[0], -1).float()
    t = target.reshape(target.shape[0], -1).float()
    numerator = 2.0 * (p * t).sum(dim=1)
    denominator = (p * p).sum(dim=1) + _DICE_EPS + (t * t).sum(dim=1) + _DICE_EPS
    return 1.0 - numerator / denominator


def mil_projection_loss(probs: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
    """Multiple-instance loss on the mask's row and column projections, averaged over the batch.

    ``dice(max_H P, max_H B) + dice(max_W P, max_W B)``. A prediction that fills the box scores
    ~0; an empty one ~2 (both projections miss everything).

    Args:
        probs: predicted foreground probabilities ``[B, 1, H, W]``.
        box_mask: the box rectangle in the same crop, ``[B, 1, H, W]`` in [0, 1].
    """
    _check_maps(probs, box_mask)
    columns = dice_loss(probs.amax(dim=2), box_mask.amax(dim=2))  # max over H: one value per column
    rows = dice_loss(probs.amax(dim=3), box_mask.amax(dim=3))  # max over W: one value per row
    return (columns + rows).mean()


def color_affinity(image: torch.Tensor, zeta: float = 0.1, kernel_size: int = 3, dilation: int = 1) -> torch.Tensor:
    """Colour similarity of each pixel to its ``k x k`` neighbours: ``[B, k*k, H, W]`` in [0, 1].

    ``w_ij = exp(-sum_c (I_i - I_j)^2 / (2 zeta^2))`` over the neighbourhood *including* the
    centre (``w_ii = 1``: a pixel's own label counts as a vote, which keeps the refinement
    close to the initial prediction). Neighbours outside the image get weight exactly 0, so the
    border is not pulled toward a made-up padding colour (the paper's code gets the same by
    shifting the image by +10 before zero padding).

    Args:
        image: ``[B, C, H, W]``; the paper uses the ImageNet-normalised crop, so ``zeta`` is in
            units of normalised intensity.
    """
    if kernel_size % 2 != 1 or kernel_size < 1 or dilation < 1:
        raise ValueError(f"kernel_size must be odd and dilation >= 1, got {kernel_size}, {dilation}")
    batch, channels, height, width = image.shape
    pad = dilation * (kernel_size // 2)
    image = image.float()
    neighbours = F.unfold(image, kernel_size, dilation=dilation, padding=pad)
    neighbours = neighbours.view(batch, channels, kernel_size * kernel_size, height, width)
    inside = F.unfold(torch.ones_like(image[:, :1]), kernel_size, dilation=dilation, padding=pad)
    inside = inside.view(batch, kernel_size * kernel_size, height, width)
    squared = (neighbours - image.unsqueeze(2)).pow(2).sum(dim=1)
    return torch.exp(-squared / (2.0 * zeta * zeta)) * inside


@torch.no_grad()
def mean_field(
    probs_init: torch.Tensor,
    box_mask: torch.Tensor,
    affinity: torch.Tensor,
    iterations: int,
    low: float = 0.1,
    high: float = 0.9,
    dilation: int = 1,
) -> torch.Tensor:
    """Refine a foreground probability map by mean-field updates on the colour-affinity graph.

    Start from ``q = clamp(init * box, low, high)``; then, ``iterations`` times, for each label
    ``l`` in {background, foreground}:
    ``q_l(i) ∝ exp(-sum_j w_ij * (-log q_l(j)))``, i.e. the affinity-weighted geometric mean
    of the neighbours' beliefs; the foreground term is multiplied by the box mask (nothing
    outside the box is object), the two are normalised to sum to 1 and clamped to
    ``[low, high]``. The clamp stops the iteration from becoming certain and freezing.

    Runs without gradients: the result is a target, not part of the graph (paper).

    Args:
        probs_init: initial foreground probabilities ``[B, 1, H, W]``.
        box_mask: ``[B, 1, H, W]`` in [0, 1].
        affinity: ``[B, k*k, H, W]`` from :func:`color_affinity` at the same resolution.
        dilation: the dilation the affinity was computed with.

    Returns:
        the refined foreground probability ``[B, 1, H, W]``.
    """
    _check_maps(probs_init, box_mask)
    taps = affinity.shape[1]
    kernel_size = math.isqrt(taps)
    if kernel_size * kernel_size != taps or affinity.shape[-2:] != probs_init.shape[-2:]:
        raise ValueError(f"affinity {tuple(affinity.shape)} does not fit probabilities {tuple(probs_init.shape)}")
    batch, _, height, width = probs_init.shape
    pad = kernel_size // 2
    box = box_mask.float()
    q = (probs_init.float() * box).clamp(low, high)
    for _ in range(int(iterations)):
        log_q = torch.cat([torch.log1p(-q), torch.log(q)], dim=1)  # [B, 2, H, W]: bg, fg
        # Zero padding contributes 0 to the sums, and its affinity is 0 anyway.
        neighbours = F.unfold(log_q, kernel_size, dilation=dilation, padding=pad * dilation)
        neighbours = neighbours.view(batch, 2, taps, height, width)
        score = (neighbours * affinity.unsqueeze(1)).sum(dim=2)  # [B, 2, H, W]
        score = score - score.amax(dim=1, keepdim=True)  # stable exp
        unnormalised = score.exp()
        background, foreground = unnormalised[:, :1], unnormalised[:, 1:] * box
        q = (foreground / (foreground + background)).clamp(low, high)
    return q


def crf_loss(
    student_probs: torch.Tensor,
    teacher_probs: torch.Tensor,
    image: torch.Tensor,
    box_mask: torch.Tensor,
    zeta: float = 0.1,
    iterations: int = 20,
    low: float = 0.1,
    high: float = 0.9,
    kernel_size: int = 3,
    dilation: int = 1,
) -> torch.Tensor:
    """Dice loss of the student against the mean-field-refined student/teacher average.

    The refinement starts from ``(student + teacher) / 2``: the EMA teacher is the steadier
    estimate (paper, section 3.4), the student the fresher one. The refined map is thresholded
    at 0.5 into a hard pseudo-mask, and ``dice(student, target).mean()`` is returned; gradients
    flow into the student only.

    Args:
        student_probs, teacher_probs: ``[B, 1, H, W]`` foreground probabilities.
        image: ``[B, C, H, W]`` at the same resolution (the paper: the normalised student crop).
        box_mask: ``[B, 1, H, W]``.
    """
    _check_maps(student_probs, teacher_probs)
    with torch.no_grad():
        affinity = color_affinity(image, zeta=zeta, kernel_size=kernel_size, dilation=dilation)
        init = (student_probs.detach().float() + teacher_probs.detach().float()) / 2.0
        refined = mean_field(init, box_mask, affinity, iterations, low=low, high=high, dilation=dilation)
        target = (refined > 0.5).float()
    return dice_loss(student_probs, target).mean()


def linear_ramp(step: int, ramp_steps: int) -> float:
    """Loss weight factor rising linearly from 0 at step 0 to 1 at ``ramp_steps`` (then 1).

    The paper ramps the MIL loss over its first 1000 iterations and the CRF loss over 4000:
    the CRF target is meaningless until the network has learnt roughly where the object is.
    ``ramp_steps = 0`` means no ramp.
    """
    if ramp_steps <= 0:
        return 1.0
    return float(min(1.0, max(0.0, step / ramp_steps)))


def _check_maps(first: torch.Tensor, second: torch.Tensor) -> None:
    if first.ndim != 4 or first.shape[1] != 1 or first.shape != second.shape:
        raise ValueError(
            f"expected two [B, 1, H, W] maps of the same shape, got {tuple(first.shape)} and {tuple(second.shape)}"
        )
