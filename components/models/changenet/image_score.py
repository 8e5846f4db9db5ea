"""One number per image from ChangeNet's change map: how sure the model is that the part is defective.

A part is judged as a whole (pass or reject), so the pixel map needs a score that ranks every
defective part above every good one. The plain maximum is one stray pixel away from a false
alarm: misregistration and glare light up single pixels on good parts. The rules here trade
that off differently; the evaluation reports the image AUROC of each, and
``segment.eval.image_score`` picks the one the operating threshold and the deployment use:

- ``max``: the highest change probability (the earlier behaviour).
- ``smooth_max``: the highest mean probability over a ``window`` x ``window`` box; a defect
  covers the box, a stray pixel does not.
- ``topk_mean``: the mean of the ``topk_fraction`` most confident pixels.
- ``area``: the share of pixels predicted as change (at the pixel threshold).
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGE_SCORES", "image_scores"]

IMAGE_SCORES: tuple[str, ...] = ("max", "smooth_max", "topk_mean", "area")


def box_mean_max(change: np.ndarray, window: int) -> np.ndarray:
    """Per image, the largest mean of ``change`` over any ``window`` x ``window`` box inside the image.

    Summed-area table: every box mean costs four lookups, whatever the window.
    """
    n, height, width = change.shape
    w = max(1, min(window, height, width))
    table = np.zeros((n, height + 1, width + 1), dtype=np.float64)
    table[:, 1:, 1:] = change.astype(np.float64).cumsum(axis=1).cumsum(axis=2)
    sums = table[:, w:, w:] - table[:, :-w, w:] - table[:, w:, :-w] + table[:, :-w, :-w]
    return sums.reshape(n, -1).max(axis=1) / (w * w)


def image_scores(change: np.ndarray, threshold: float, window: int, topk_fraction: float) -> dict[str, np.ndarray]:
    """Every rule's score for a batch of (N, H, W) change probabilities; one array of N per rule."""
    if change.ndim != 3:
        raise ValueError(f"change probabilities must be (N, H, W), got shape {change.shape}")
    n = change.shape[0]
    flat = change.reshape(n, -1)
    if flat.shape[1] == 0:
        zeros = np.zeros(n)
        return {rule: zeros for rule in IMAGE_SCORES}
    k = int(np.clip(round(topk_fraction * flat.shape[1]), 1, flat.shape[1]))
    top = np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k :]
    return {
        "max": flat.max(axis=1).astype(np.float64),
        "smooth_max": box_mean_max(change, window),
        "topk_mean": top.mean(axis=1, dtype=np.float64),
        "area": (flat >= threshold).mean(axis=1, dtype=np.float64),
    }
