"""Reference points a trained model must beat.

The *difference baseline* thresholds ``|test - golden|`` (mean over channels) with the
single best threshold chosen on the evaluated split itself, so it is an optimistic
bound for "no learning at all". On MVTec transistor (TAO's 212/91 split) it reaches a
change-IoU of only about 0.13: golden and test differ in many places that are not defects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.data.formats import DatasetLayout, read_segment_list
from components.imageio import read_image, read_mask


def difference_baseline(datasets_root: Path, split: str = "val", bins: int = 256) -> dict[str, float]:
    """Best-threshold change-IoU (and its P/R/F1) of thresholding the absolute difference image."""
    layout = DatasetLayout(Path(datasets_root))
    change_hist = np.zeros(bins, dtype=np.int64)
    background_hist = np.zeros(bins, dtype=np.int64)
    for name in read_segment_list(layout.segment_list(split)):
        test = read_image(layout.segment_image("A", name)).astype(np.int16)
        golden = read_image(layout.segment_image("B", name)).astype(np.int16)
        truth = read_mask(layout.segment_image("label", name))
        diff = np.abs(test - golden).mean(axis=2).astype(np.int64).clip(0, bins - 1)
        change_hist += np.bincount(diff[truth], minlength=bins)
        background_hist += np.bincount(diff[~truth], minlength=bins)
    # Predict change for diff >= t: counts above each threshold via reversed cumulative sums.
    tp = np.cumsum(change_hist[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(background_hist[::-1])[::-1].astype(np.float64)
    fn = change_hist.sum() - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), 0.0)
    best = int(np.argmax(iou))
    precision = tp[best] / (tp[best] + fp[best]) if tp[best] + fp[best] else 0.0
    recall = tp[best] / (tp[best] + fn[best]) if tp[best] + fn[best] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "iou": float(iou[best]),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "threshold": float(best),
    }
