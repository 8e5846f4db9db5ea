"""From a CAM heatmap to defect boxes, and the boxes' agreement with the true mask.

Boxes are ``(x1, y1, x2, y2)`` in pixel-edge coordinates of the heatmap's image: the box of the
single pixel ``(x, y)`` is ``(x, y, x + 1, y + 1)``, so its area is ``(x2 - x1) * (y2 - y1)`` and
``(x1, y1, x2 - x1, y2 - y1)`` is its COCO ``[x, y, w, h]``.

**Heatmap to box** (:func:`heatmap_to_boxes`): the pixels at or above ``threshold_rel`` times the
map's maximum, split into 8-connected regions (:func:`components.data.coco.connected_regions`);
``largest`` keeps the region with the most pixels, ``all`` every region of at least ``min_area``
pixels (largest first). The threshold is relative so that it means the same on every image,
whatever the logit scale (Zhou et al. use 20% of the maximum for ImageNet objects; a defect is
small, so the default here is 50%).

**The true box** (:func:`mask_to_box`): the box around *all* the mask's pixels, even when they
form several regions. The CAM is read at stride 32 (a 6 x 6 map at 192 px): it cannot resolve two
scratches a few pixels apart and blurs them into one blob, and resizing a mask to the prepared
size can split one defect into pieces. Matching per region would grade the CAM on a resolution
it does not have; the enclosing box grades what it is for: pointing at the defect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from components.data.coco import connected_regions

__all__ = ["Box", "best_iou", "box_iou", "heatmap_to_boxes", "mask_to_box"]

Box = tuple[int, int, int, int]
BoxMode = Literal["largest", "all"]


def _to_2d(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    array = np.asarray(array)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected an HxW map (or 1xHxW), got shape {np.asarray(array).shape}")
    return array


def _region_box(region: np.ndarray) -> Box:
    ys, xs = np.nonzero(region)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def heatmap_to_boxes(
    heatmap: Any, threshold_rel: float = 0.5, mode: BoxMode = "largest", min_area: int = 1
) -> list[Box]:
    """Boxes of the regions where ``heatmap >= threshold_rel * max`` (see the module docstring).

    Args:
        heatmap: ``HxW`` (or ``1xHxW``) numpy array or tensor; any scale, non-negative where it matters.
        threshold_rel: in (0, 1], the share of the map's maximum a pixel must reach.
        mode: ``largest`` (at most one box) or ``all`` (one box per region, largest region first).
        min_area: regions with fewer pixels give no box, in both modes.

    Returns:
        A list of ``(x1, y1, x2, y2)``; empty when the map has no positive maximum or no region
        is large enough.
    """
    if not 0.0 < threshold_rel <= 1.0:
        raise ValueError(f"threshold_rel must be in (0, 1], got {threshold_rel}")
    if mode not in ("largest", "all"):
        raise ValueError(f"mode must be 'largest' or 'all', got {mode!r}")
    heat = _to_2d(heatmap).astype(np.float64)
    peak = float(heat.max()) if heat.size else 0.0
    if not peak > 0.0:  # nothing points at a defect (also catches nan)
        return []
    regions, _ = connected_regions(heat >= threshold_rel * peak, min_area=max(int(min_area), 1))
    if not regions:
        return []
    areas = [int(region.sum()) for region in regions]
    order = sorted(range(len(regions)), key=lambda i: -areas[i])  # stable: ties keep raster order
    if mode == "largest":
        order = order[:1]
    return [_region_box(regions[i]) for i in order]


def mask_to_box(mask: Any) -> Box | None:
    """The box around every non-zero pixel of ``mask`` (all regions together); ``None`` when empty."""
    array = _to_2d(mask) != 0
    if not array.any():
        return None
    return _region_box(array)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes; 0 when both are empty."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def best_iou(predicted: Sequence[Sequence[float]], truth: Sequence[float] | None) -> float:
    """The IoU of the predicted box that overlaps ``truth`` most; 0 without boxes, nan without a truth."""
    if truth is None:
        return float("nan")
    return max((box_iou(box, truth) for box in predicted), default=0.0)
