"""Metrics of the CAM classifier: the image verdict and the heatmap box's localisation.

The verdict uses the numbers every pass/defect family reports
(:mod:`components.evaluation.verdict`: AUROC, AP, TAO's accuracies at the operating threshold),
plus the Visual-Inspection reference's ``accuracy`` and ``balanced_accuracy`` (the mean of the
per-class recalls, which a classifier calling everything "good" cannot game on an imbalanced
line) and the confusion matrix as counts (``confusion/tn``, ``fp``, ``fn``, ``tp``; anomaly is
the positive class).

Localisation is judged on the defective images that have a true mask: the IoU of the CAM's box
with the box of the mask (:mod:`.heatmap`), its mean (``box_iou``) and the share of images whose
box hits the defect at IoU >= 0.3 and >= 0.5 (``box_hit_30``, ``box_hit_50``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from components.evaluation.verdict import (
    average_precision,
    choose_threshold,
    classification_metrics,
    rank_auroc,
    roc_curve,
)

__all__ = [
    "HIT_IOUS",
    "average_precision",
    "balanced_accuracy",
    "choose_threshold",
    "classification_metrics",
    "confusion_counts",
    "localisation_metrics",
    "rank_auroc",
    "roc_curve",
    "verdict_metrics",
]

HIT_IOUS: tuple[float, ...] = (0.3, 0.5)
"""IoU levels at which a CAM box counts as hitting the defect (the issue's two)."""


def confusion_counts(predicted: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """``tn``, ``fp``, ``fn``, ``tp`` of boolean calls against boolean truths (anomaly is positive)."""
    predicted, labels = np.asarray(predicted, dtype=bool), np.asarray(labels, dtype=bool)
    return {
        "tn": int((~predicted & ~labels).sum()),
        "fp": int((predicted & ~labels).sum()),
        "fn": int((~predicted & labels).sum()),
        "tp": int((predicted & labels).sum()),
    }


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the classes present (good and anomaly); nan for no samples."""
    c = confusion_counts(predicted, labels)
    recalls = []
    if c["tn"] + c["fp"]:
        recalls.append(c["tn"] / (c["tn"] + c["fp"]))
    if c["tp"] + c["fn"]:
        recalls.append(c["tp"] / (c["tp"] + c["fn"]))
    return float(np.mean(recalls)) if recalls else math.nan


def verdict_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Everything about the image call at ``threshold`` (anomaly when the score is above it)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    predicted = scores > threshold
    metrics = classification_metrics(scores, labels, threshold)
    metrics["accuracy"] = float((predicted == labels).mean()) if labels.size else math.nan
    metrics["balanced_accuracy"] = balanced_accuracy(predicted, labels)
    metrics.update({f"confusion/{k}": float(v) for k, v in confusion_counts(predicted, labels).items()})
    return metrics


def localisation_metrics(ious: Sequence[float]) -> dict[str, float]:
    """``box_iou`` (mean), ``box_hit_30``/``box_hit_50`` and ``localised_images`` over the images with a true box.

    nan IoUs (images without a true box) are skipped; without any image the rates are nan.
    """
    values = np.asarray([v for v in ious if v == v], dtype=np.float64)
    out = {"box_iou": float(values.mean()) if values.size else math.nan}
    out.update(
        {f"box_hit_{round(100 * t)}": float((values >= t).mean()) if values.size else math.nan for t in HIT_IOUS}
    )
    out["localised_images"] = float(values.size)
    return out
