"""Mask quality of an auto-labeler: IoU of each predicted instance mask with its ground truth.

MAL is judged by how well its masks match the true masks *given the true boxes* (the paper's
and TAO's ``mIoU``): one IoU per annotated instance, averaged. :class:`InstanceIoU` keeps one
record per instance so the same numbers can be cut several ways:

- ``miou``: mean over instances (the checkpoint monitor; every instance counts once);
- ``miou_class_mean``: mean over categories of the per-category mean, the number TAO's
  ``MIoUMetrics`` reports (a rare class weighs as much as a common one);
- ``miou/<category>``: per category;
- ``miou_small`` / ``miou_medium`` / ``miou_large``: by box area in original image pixels,
  COCO's buckets (small < 32^2 <= medium <= 96^2 < large);
- ``miou_box``: the same instances scored with the filled box as the mask, the baseline any
  auto-labeler must beat (when box IoUs were recorded);
- ``instances``, ``instances_<size>``: counts.

Pure numpy: no torch or Lightning needed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

__all__ = ["SIZE_BUCKETS", "InstanceIoU", "InstanceRecord", "filled_box_mask", "mask_iou", "size_bucket"]

SMALL_MAX_AREA = 32**2
LARGE_MIN_AREA = 96**2
SIZE_BUCKETS: tuple[str, ...] = ("small", "medium", "large")


def size_bucket(box_area: float) -> str:
    """COCO size bucket of a box area in original pixels; every area lands in exactly one.

    small: area < 32^2; medium: 32^2 <= area <= 96^2; large: area > 96^2.
    (TAO's ``MIoUMetrics`` tests ``area < 32^2``, ``32^2 < area < 96^2`` and ``area > 96^2``,
    so a box of exactly 32^2 or 96^2 px falls in no bucket there; here the boundaries are
    inclusive on the medium side, so no instance is lost.)
    """
    if box_area < SMALL_MAX_AREA:
        return "small"
    if box_area <= LARGE_MIN_AREA:
        return "medium"
    return "large"


def mask_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape.

    Two empty masks give 1.0: predicting nothing where there is nothing is a perfect answer,
    and 0/0 must not become NaN in a mean. (MAL's ground truth is never empty: every
    instance has a box around an object.)
    """
    pred = np.asarray(pred, dtype=bool)
    true = np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {true.shape}")
    union = int(np.logical_or(pred, true).sum())
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, true).sum()) / union


@dataclass(frozen=True)
class InstanceRecord:
    """The IoU of one annotated instance, with what the summary groups it by."""

    ann_id: int
    category: str
    box_area: float
    iou: float
    box_iou: float | None = None


class InstanceIoU:
    """Accumulates per-instance IoUs over a split; :meth:`summary` reduces them."""

    def __init__(self) -> None:
        self.records: list[InstanceRecord] = []

    def reset(self) -> None:
        self.records = []

    def __len__(self) -> int:
        return len(self.records)

    def update(
        self, ann_id: int, category: str | int, box_area: float, iou: float, box_iou: float | None = None
    ) -> None:
        """Add one instance. ``category`` is a name (or an id, used as its name)."""
        self.records.append(
            InstanceRecord(
                ann_id=int(ann_id),
                category=str(category),
                box_area=float(box_area),
                iou=float(iou),
                box_iou=None if box_iou is None else float(box_iou),
            )
        )

    def merge(self, other: InstanceIoU) -> None:
        """Add another accumulator's records (e.g. gathered from another DDP rank)."""
        self.records.extend(other.records)

    def summary(self) -> dict[str, float]:
        """The reductions described in the module docstring; NaN where a group is empty."""
        records = self._unique()
        ious = [r.iou for r in records]
        out: dict[str, float] = {"miou": _mean(ious), "instances": float(len(records))}
        by_category: dict[str, list[float]] = defaultdict(list)
        by_size: dict[str, list[float]] = defaultdict(list)
        for record in records:
            by_category[record.category].append(record.iou)
            by_size[size_bucket(record.box_area)].append(record.iou)
        category_means = {name: _mean(values) for name, values in sorted(by_category.items())}
        out["miou_class_mean"] = _mean(list(category_means.values()))
        for bucket in SIZE_BUCKETS:
            out[f"miou_{bucket}"] = _mean(by_size.get(bucket, []))
            out[f"instances_{bucket}"] = float(len(by_size.get(bucket, [])))
        for name, value in category_means.items():
            out[f"miou/{name}"] = value
        box_ious = [r.box_iou for r in records if r.box_iou is not None]
        if box_ious:
            out["miou_box"] = _mean(box_ious)
        return out

    def _unique(self) -> list[InstanceRecord]:
        """One record per annotation id (the last): a DDP sampler may pad a split with repeats."""
        return list({record.ann_id: record for record in self.records}.values())


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def filled_box_mask(box_xyxy: tuple[float, float, float, float] | np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """The box as a boolean ``[H, W]`` mask (every pixel the box touches): the baseline labeler."""
    height, width = int(image_hw[0]), int(image_hw[1])
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    mask = np.zeros((height, width), dtype=bool)
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    mask[r0:r1, c0:c1] = True
    return mask
