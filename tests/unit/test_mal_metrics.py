"""MAL's mask metrics: IoU, COCO size buckets, per-instance accumulation and its summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.models.mal.metrics import InstanceIoU, filled_box_mask, mask_iou, size_bucket


def test_mask_iou() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[:2] = True  # 8 px
    b[1:3] = True  # 8 px, 4 shared
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0  # both empty: agreement, not NaN
    assert mask_iou(a, np.zeros((4, 4))) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(a, np.zeros((3, 4)))


def test_size_buckets_lose_no_boundary_area() -> None:
    assert size_bucket(32**2 - 1) == "small"
    assert size_bucket(32**2) == "medium"  # TAO's strict tests drop exactly 32^2 ...
    assert size_bucket(96**2) == "medium"  # ... and exactly 96^2
    assert size_bucket(96**2 + 1) == "large"


def test_summary_means_by_instance_class_and_size() -> None:
    metric = InstanceIoU()
    metric.update(1, "scratch", 100.0, 0.9, box_iou=0.5)
    metric.update(2, "scratch", 2000.0, 0.7, box_iou=0.6)
    metric.update(3, "dent", 20000.0, 0.2, box_iou=0.7)
    metric.update(3, "dent", 20000.0, 0.2, box_iou=0.7)  # a DDP repeat counts once
    out = metric.summary()
    assert out["instances"] == 3.0
    assert out["miou"] == pytest.approx(0.6)
    assert out["miou/scratch"] == pytest.approx(0.8) and out["miou/dent"] == pytest.approx(0.2)
    assert out["miou_class_mean"] == pytest.approx(0.5)
    assert (out["miou_small"], out["miou_medium"], out["miou_large"]) == pytest.approx((0.9, 0.7, 0.2))
    assert out["instances_small"] == out["instances_medium"] == out["instances_large"] == 1.0
    assert out["miou_box"] == pytest.approx(0.6)
    other = InstanceIoU()
    other.update(4, "dent", 10.0, 0.0)
    metric.merge(other)
    assert metric.summary()["instances"] == 4.0
    metric.reset()
    assert len(metric) == 0 and math.isnan(metric.summary()["miou"])


def test_filled_box_mask_covers_every_touched_pixel() -> None:
    mask = filled_box_mask((1.5, 0.0, 3.0, 2.2), (4, 5))
    assert mask.sum() == 2 * 3 and mask[0:3, 1:3].all()
    assert filled_box_mask((-2.0, -2.0, 1.0, 1.0), (4, 4)).sum() == 1  # clipped to the image
