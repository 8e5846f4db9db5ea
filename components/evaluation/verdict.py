"""Image-level verdicts: pass or defect per part from a score, and the choice of the threshold.

Every family that ends in a pass/defect call (ChangeNet-Classification's score, the
segmentation mask's image score) is judged with these functions, so "defect recall" and
"false alarm" mean the same everywhere. TAO's numbers (``AOIMetrics``) at the operating
threshold, as fractions in [0, 1]:

- ``total_accuracy``: right calls over all parts;
- ``defect_accuracy``: defects caught over all defects (defect recall);
- ``false_alarm``: good parts called defect over **all** parts (TAO's denominator);
- ``false_negative``: defects passed over all parts.

Beside them: ``false_alarm_rate`` (good parts flagged over good parts, the number a line
tunes), ``precision``, and the threshold-free ``auroc`` and ``ap``. A part is a defect when its
score is **above** the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "average_precision",
    "choose_threshold",
    "classification_metrics",
    "rank_auroc",
    "reported_threshold",
    "roc_curve",
]


def reported_threshold(chosen_here: bool, given: float | None, choose: Callable[[], float]) -> float:
    """The operating threshold a split's verdict is reported at, the same rule for every family.

    ``nan`` on the split the threshold is chosen on (``chosen_here``): a verdict there would flatter
    the model, so only threshold-free numbers are given. Elsewhere ``given`` when there is one (a
    quantized copy is called at its FP32 model's threshold), else the one ``choose`` picks for the
    model being judged (a pass over the threshold split, so it is only made when needed).
    """
    if chosen_here:
        return math.nan
    return choose() if given is None else float(given)


def rank_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties); ``nan`` without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank of each run of equal scores: a tie counts half a win.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _arrays(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores for {labels.size} labels")
    return scores, labels


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the step precision-recall curve (precision at each defect, averaged); nan without defects."""
    scores, labels = _arrays(scores, labels)
    positives = int(labels.sum())
    if positives == 0:
        return math.nan
    # Descending score; tied scores enter together (a tie block is one threshold).
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_block = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_block]
    seen = (np.flatnonzero(last_of_block) + 1).astype(np.float64)
    precision = tp / seen
    recall_gain = np.diff(np.r_[0, tp]) / positives
    return float((precision * recall_gain).sum())


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(false positive rate, true positive rate, thresholds)`` from the strictest threshold down."""
    scores, labels = _arrays(scores, labels)
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    pos, neg = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
    tpr = np.array([(scores[labels] >= t).sum() / pos for t in thresholds])
    fpr = np.array([(scores[~labels] >= t).sum() / neg for t in thresholds])
    return fpr, tpr, thresholds


def choose_threshold(scores: np.ndarray, labels: np.ndarray, max_false_alarm_rate: float) -> float:
    """The threshold that catches the most defects while flagging at most ``max_false_alarm_rate`` of good parts.

    Among the thresholds that do equally well, the middle of their range, so the operating point
    keeps the widest margin on both sides (scores of new parts are never exactly those seen here).
    Without defects: just above the highest good score; without good parts: just below the
    lowest defect score.
    """
    scores, labels = _arrays(scores, labels)
    if scores.size == 0:
        raise ValueError("no scores to choose a threshold from")
    good, bad = np.sort(scores[~labels]), np.sort(scores[labels])
    if bad.size == 0:
        return float(np.nextafter(good[-1], np.inf))
    if good.size == 0:
        return float(np.nextafter(bad[0], -np.inf))
    # Lowest threshold t (score > t is a defect) with at most k good parts above it.
    allowed = math.floor(max_false_alarm_rate * good.size + 1e-9)
    low = float(good[good.size - 1 - allowed]) if allowed < good.size else -np.inf
    caught = int((bad > low).sum())
    if caught == 0:  # nothing catchable within the budget: stay just above the allowed good parts
        return float(np.nextafter(low, np.inf))
    # Highest threshold still catching as many: just below the caught-th highest defect score.
    high = float(bad[bad.size - caught])
    below = good[good < high]  # good parts that can be passed too without losing a defect
    low = max(low, float(below.max())) if below.size else low
    if not np.isfinite(low):
        low = high - 1.0
    return float((low + high) / 2.0) if high > low else float(np.nextafter(high, -np.inf))


def classification_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """TAO's metrics at ``threshold`` plus AUROC and AP (see the module docstring)."""
    scores, labels = _arrays(scores, labels)
    total = max(scores.size, 1)
    predicted = scores > threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    tn = int((~predicted & ~labels).sum())
    defects, goods = tp + fn, fp + tn
    return {
        "total_accuracy": (tp + tn) / total,
        "defect_accuracy": tp / defects if defects else math.nan,
        "false_alarm": fp / total,
        "false_negative": fn / total,
        "false_alarm_rate": fp / goods if goods else math.nan,
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "auroc": rank_auroc(scores, labels),
        "ap": average_precision(scores, labels),
        "threshold": float(threshold),
        "parts": float(scores.size),
        "defects": float(defects),
        "misclassified": float(fp + fn),
    }
