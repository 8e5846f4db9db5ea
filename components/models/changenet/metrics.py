"""Streaming metrics of Visual ChangeNet-Segmentation over a whole split.

Evaluation runs batch by batch, and a split of a few hundred 256x256 images already
holds tens of millions of pixels, so nothing here keeps pixels around. The state is:

- one ``num_classes x num_classes`` pixel confusion matrix (rows: truth, columns: prediction);
- one 2x2 change-vs-background confusion matrix per defect kind;
- false-positive pixel counts on good images;
- two histograms of the change probability (``bins`` bins over [0, 1]), one for change
  pixels and one for background pixels, from which the pixel ROC / PR curves follow;
- one small record per image (its image scores, truth, prediction, TP/FP/FN).

**Units.** :meth:`SegmentationMetrics.compute` returns *fractions in [0, 1]* for every
ratio (``precision`` = 0.945), counts as counts and thresholds as probabilities. Use
:func:`to_percent` (or :func:`format_metrics`) to show them the way the TAO model card
does (precision 94.5, IoU 86.15). Keeping fractions in storage avoids mixing scales
between MLflow, DVC metrics files and the promotion gates.

**Undefined values** (a ratio whose denominator is zero, e.g. precision when nothing
was predicted as change, or image AUROC of a split without good images) are ``nan``,
never 0: a 0 would read as a failing model.

**Change class.** With ``num_classes == 2`` class 1 is the change class. With more
classes, "change" means "any class but 0", so the change-class metrics measure
detection of a change of any kind; ``miou``/``mf1`` and ``class_iou/<c>`` still see
every class separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.evaluation.verdict import average_precision, classification_metrics, rank_auroc
from components.models.changenet.image_score import IMAGE_SCORES, image_scores

if TYPE_CHECKING:
    from components.config import SegmentEvalParams

GOOD_LABEL = "good"
"""Label of defect-free samples in sample names (``components.data.layout.GOOD``)."""

RAW_SPLITS = ("train", "test")
"""The raw MVTec split token inside a sample name ``<label>_<split>_<stem>``."""

_COUNT_KEYS = frozenset({"good_fp_pixels", "good_fp_pixels_per_image"})


def parse_sample_name(name: str) -> tuple[str, str, str]:
    """Split ``<label>_<split>_<stem>`` into its parts; the label may hold underscores.

    The stem is the last token and the split (``train`` or ``test``) the one before it,
    so ``bent_lead_test_007`` gives ``("bent_lead", "test", "007")``. A trailing ``.png``
    is ignored. Raises :class:`ValueError` naming the sample when the name does not fit.
    """
    stem_name = name[:-4] if name.endswith(".png") else name
    tokens = stem_name.split("_")
    if len(tokens) < 3 or tokens[-2] not in RAW_SPLITS or not all(tokens):
        raise ValueError(f"sample name {name!r} is not <label>_<split>_<stem> with split one of {RAW_SPLITS}")
    return "_".join(tokens[:-2]), tokens[-2], tokens[-1]


def sample_kind(name: str) -> str | None:
    """The defect kind (or ``good``) an MVTec-style name carries; ``None`` for other names.

    Imported sources (TAO lists, golden/test pairs) name parts by their own ids: their
    images still count in every pixel and image metric, only not per kind.
    """
    try:
        return parse_sample_name(name)[0]
    except ValueError:
        return None


def is_fraction_key(key: str) -> bool:
    """True for metric keys holding a ratio in [0, 1] (those :func:`to_percent` scales)."""
    return not (key.startswith("num_") or key.endswith("threshold") or key in _COUNT_KEYS)


def to_percent(metrics: dict[str, float]) -> dict[str, float]:
    """Copy of ``metrics`` with every ratio times 100 (the TAO card's unit); counts untouched."""
    return {key: value * 100.0 if is_fraction_key(key) else value for key, value in metrics.items()}


def format_metrics(metrics: dict[str, float], digits: int = 2) -> str:
    """One ``key value`` line per metric, ratios in percent, for logs and reports."""
    shown = to_percent(metrics)
    width = max((len(key) for key in shown), default=0)
    lines = []
    for key, value in shown.items():
        unit = " %" if is_fraction_key(key) else ""
        text = "n/a" if math.isnan(value) else f"{value:.{digits}f}{unit}"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


@dataclass(frozen=True)
class ImageRecord:
    """What the metrics keep of one image: enough for image-level metrics and picking overlays."""

    name: str
    kind: str | None  # defect kind or "good"; None when no names were given
    score: float  # the chosen image score (``SegmentationMetrics.image_score``)
    defective: bool  # truth: any change pixel
    predicted: bool  # prediction: any pixel predicted as change
    tp: int
    fp: int
    fn: int
    scores: dict[str, float] = field(default_factory=dict)  # every rule of image_score.IMAGE_SCORES

    @property
    def iou(self) -> float:
        """Change-class IoU of this image alone (``nan`` when truth and prediction are both empty)."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def _to_numpy(array: Any, dtype: type | None = None) -> np.ndarray:
    """Accept numpy arrays and torch tensors (any device, any float type) without importing torch."""
    if hasattr(array, "detach"):
        array = array.detach()
        if dtype is not None and array.is_floating_point():
            array = array.float()  # bf16/fp16 have no numpy counterpart
        array = array.cpu().numpy()
    out = np.asarray(array)
    return out.astype(dtype, copy=False) if dtype is not None else out


def _binary_scores(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(best F1, threshold)`` over the rule ``score >= threshold``; thresholds are observed scores.

    Ties in F1 go to the highest threshold (fewest alarms). ``(nan, nan)`` without positives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return math.nan, math.nan
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    tp = np.cumsum(sorted_labels)
    fp = np.cumsum(~sorted_labels)
    # Only the last position of a run of equal scores is a reachable operating point.
    last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tp, fp, thresholds = tp[last], fp[last], sorted_scores[last]
    f1 = 2 * tp / (2 * tp + fp + (n_pos - tp))
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


class SegmentationMetrics:
    """Accumulate ChangeNet-Segmentation metrics over a split, one batch at a time.

    ``update`` takes the change probability ``(N, H, W)`` (binary models) or the class
    probabilities ``(N, C, H, W)`` (change probability: ``prob[:, 1]`` for two classes,
    ``1 - prob[:, 0]`` for more), the true mask ``(N, H, W)`` and optionally the sample
    names (``<label>_<split>_<stem>``), which enable per-kind IoU and the good-image
    false-positive counts. A pixel is predicted as change when its change probability is
    ``>= threshold`` (argmax over classes when ``num_classes > 2``).
    """

    def __init__(
        self,
        num_classes: int = 2,
        threshold: float = 0.5,
        bins: int = 1000,
        image_score: str = "max",
        score_window: int = 9,
        topk_fraction: float = 0.001,
    ) -> None:
        if image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score must be one of {list(IMAGE_SCORES)}, got {image_score!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.num_classes = num_classes
        self.threshold = float(threshold)
        self.bins = int(bins)
        self.image_score = image_score
        self.score_window = int(score_window)
        self.topk_fraction = float(topk_fraction)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget everything seen so far (start of a new split or epoch)."""
        c = self.num_classes
        self.confusion = np.zeros((c, c), dtype=np.int64)
        self.kind_confusion: dict[str, np.ndarray] = {}  # kind -> [tn, fp, fn, tp]
        self.hist_change = np.zeros(self.bins, dtype=np.int64)
        self.hist_background = np.zeros(self.bins, dtype=np.int64)
        self.good_fp_pixels = 0
        self.good_pixels = 0
        self.good_fp_images = 0
        self.records: list[ImageRecord] = []

    def merge(self, other: SegmentationMetrics) -> SegmentationMetrics:
        """Add ``other``'s state into this one (e.g. per-rank metrics gathered after DDP evaluation)."""
        if self._settings() != other._settings():
            raise ValueError("can only merge metrics with the same num_classes, threshold, bins and image score")
        self.confusion += other.confusion
        for kind, counts in other.kind_confusion.items():
            self.kind_confusion[kind] = self.kind_confusion.get(kind, np.zeros(4, dtype=np.int64)) + counts
        self.hist_change += other.hist_change
        self.hist_background += other.hist_background
        self.good_fp_pixels += other.good_fp_pixels
        self.good_pixels += other.good_pixels
        self.good_fp_images += other.good_fp_images
        self.records.extend(other.records)
        return self

    @classmethod
    def from_params(cls, num_classes: int, eval_params: SegmentEvalParams) -> SegmentationMetrics:
        """Metrics with the pixel threshold and image-score rule of ``segment.eval``."""
        return cls(
            num_classes,
            eval_params.threshold,
            image_score=eval_params.image_score,
            score_window=eval_params.score_window,
            topk_fraction=eval_params.topk_fraction,
        )

    def _settings(self) -> tuple[Any, ...]:
        return (self.num_classes, self.threshold, self.bins, self.image_score, self.score_window, self.topk_fraction)

    def like(self) -> SegmentationMetrics:
        """An empty instance with the same settings (to merge gathered states into)."""
        return SegmentationMetrics(
            self.num_classes, self.threshold, self.bins, self.image_score, self.score_window, self.topk_fraction
        )

    # ----------------------------------------------------------------- update

    def _predict(self, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(change probability, predicted class)`` from either accepted probability shape."""
        if prob.ndim == 3:
            if self.num_classes != 2:
                raise ValueError(
                    f"a (N, H, W) change probability needs num_classes=2; pass (N, {self.num_classes}, H, W) instead"
                )
            change = prob
        elif prob.ndim == 4:
            if prob.shape[1] != self.num_classes:
                raise ValueError(f"class axis has {prob.shape[1]} entries, expected num_classes={self.num_classes}")
            if self.num_classes > 2:
                return 1.0 - prob[:, 0], prob.argmax(axis=1)
            change = prob[:, 1]
        else:
            raise ValueError(f"probabilities must be (N, H, W) or (N, C, H, W), got shape {prob.shape}")
        return change, (change >= self.threshold).astype(np.int64)

    def update(self, change_prob: Any, target: Any, names: Sequence[str] | None = None) -> None:
        """Add one batch. ``change_prob``: probabilities (not logits); ``target``: class per pixel."""
        prob = _to_numpy(change_prob, np.float32)
        truth = _to_numpy(target)
        if truth.ndim == 4 and truth.shape[1] == 1:
            truth = truth[:, 0]
        truth = truth.astype(np.int64, copy=False)
        if prob.size and (prob.min() < -1e-6 or prob.max() > 1 + 1e-6 or np.isnan(prob).any()):
            raise ValueError("change_prob must hold probabilities in [0, 1] (apply softmax/sigmoid to logits first)")
        change, pred = self._predict(np.clip(prob, 0.0, 1.0))
        if truth.shape != pred.shape:
            raise ValueError(f"target shape {truth.shape} does not match predictions {pred.shape}")
        if truth.size and (truth.min() < 0 or truth.max() >= self.num_classes):
            raise ValueError(f"target values must lie in [0, {self.num_classes}); got {truth.min()}..{truth.max()}")
        if names is not None and len(names) != len(truth):
            raise ValueError(f"got {len(names)} names for a batch of {len(truth)} images")
        if len(truth) == 0:
            return
        c = self.num_classes
        self.confusion += np.bincount((truth * c + pred).ravel(), minlength=c * c).reshape(c, c)

        true_change, pred_change = truth != 0, pred != 0
        bin_index = np.minimum((change * self.bins).astype(np.int64), self.bins - 1)
        joint = np.bincount((bin_index + self.bins * true_change).ravel(), minlength=2 * self.bins)
        self.hist_background += joint[: self.bins]
        self.hist_change += joint[self.bins :]

        tp = (true_change & pred_change).sum(axis=(1, 2))
        fp = (~true_change & pred_change).sum(axis=(1, 2))
        fn = (true_change & ~pred_change).sum(axis=(1, 2))
        scores = image_scores(change, self.threshold, self.score_window, self.topk_fraction)
        pixels = int(np.prod(truth.shape[1:]))
        for i in range(len(truth)):
            name = names[i] if names is not None else f"#{len(self.records)}"
            kind = sample_kind(name) if names is not None else None
            record = ImageRecord(
                name=name,
                kind=kind,
                score=float(scores[self.image_score][i]),
                defective=bool(tp[i] + fn[i] > 0),
                predicted=bool(tp[i] + fp[i] > 0),
                tp=int(tp[i]),
                fp=int(fp[i]),
                fn=int(fn[i]),
                scores={rule: float(values[i]) for rule, values in scores.items()},
            )
            self.records.append(record)
            if kind == GOOD_LABEL:
                self.good_fp_pixels += record.fp
                self.good_pixels += pixels
                self.good_fp_images += int(record.fp > 0)
            elif kind is not None:
                tn = pixels - record.tp - record.fp - record.fn
                counts = np.array([tn, record.fp, record.fn, record.tp], dtype=np.int64)
                self.kind_confusion[kind] = self.kind_confusion.get(kind, np.zeros(4, dtype=np.int64)) + counts

    # ---------------------------------------------------------------- compute

    def _change_counts(self) -> tuple[int, int, int, int]:
        """``(tp, fp, fn, tn)`` of change (any class but 0) vs background."""
        conf = self.confusion
        return int(conf[1:, 1:].sum()), int(conf[0, 1:].sum()), int(conf[1:, 0].sum()), int(conf[0, 0])

    def _curve_counts(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Pixels with change probability ``>= k / bins`` for ``k = 0..bins``: (change, background, P, N)."""
        change_ge = np.r_[np.cumsum(self.hist_change[::-1])[::-1], 0]
        background_ge = np.r_[np.cumsum(self.hist_background[::-1])[::-1], 0]
        return change_ge, background_ge, int(change_ge[0]), int(background_ge[0])

    def pixel_auroc(self) -> float:
        """Pixel ROC AUC from the histograms; pixels sharing a bin count as ties (half a win)."""
        change_ge, _, n_pos, n_neg = self._curve_counts()
        if n_pos == 0 or n_neg == 0:
            return math.nan
        above = change_ge[1:].astype(np.float64)  # change pixels in higher bins than bin b
        wins = (self.hist_background * (above + 0.5 * self.hist_change)).sum()
        return float(wins / (float(n_pos) * float(n_neg)))

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel ``(precision, recall, thresholds)`` at thresholds ``k / bins``, ascending.

        Point ``k`` is the rule ``change_prob >= thresholds[k]``. Where nothing is
        predicted as change the precision is taken as 1 (the usual end point of a PR curve).
        """
        change_ge, background_ge, n_pos, _ = self._curve_counts()
        tp, fp = change_ge[:-1].astype(np.float64), background_ge[:-1].astype(np.float64)
        predicted = tp + fp
        precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
        recall = tp / n_pos if n_pos else np.full_like(tp, np.nan)
        thresholds = np.arange(self.bins, dtype=np.float64) / self.bins
        return precision, recall, thresholds

    def pixel_average_precision(self) -> float:
        """Average precision: sum over thresholds of (recall gained) x precision, from the histograms."""
        precision, recall, _ = self.pr_curve()
        if np.isnan(recall).any():
            return math.nan
        gained = recall - np.r_[recall[1:], 0.0]
        return float((gained * precision).sum())

    def _pixel_best_f1(self) -> tuple[float, float]:
        change_ge, background_ge, n_pos, _ = self._curve_counts()
        if n_pos == 0:
            return math.nan, math.nan
        tp, fp = change_ge[:-1].astype(np.float64), background_ge[:-1].astype(np.float64)
        f1 = 2 * tp / (2 * tp + fp + (n_pos - tp))
        best = int(np.argmax(f1[::-1]))  # ties go to the highest threshold
        k = self.bins - 1 - best
        return float(f1[k]), k / self.bins

    def image_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """``(chosen image score, defective)`` of every image seen, in order: what a threshold is chosen on."""
        scores = np.array([r.score for r in self.records], dtype=np.float64)
        truth = np.array([r.defective for r in self.records], dtype=bool)
        return scores, truth

    def _image_metrics(self, image_threshold: float | None) -> dict[str, float]:
        """Image AUROC of every score rule; the any-pixel verdict; the verdict at ``image_threshold``."""
        scores, truth = self.image_scores()
        pred = np.array([r.predicted for r in self.records], dtype=bool)
        tp, fp = int((truth & pred).sum()), int((~truth & pred).sum())
        fn, tn = int((truth & ~pred).sum()), int((~truth & ~pred).sum())
        binary = _binary_scores(tp, fp, fn, tn)
        best_f1, best_threshold = best_f1_threshold(scores, truth)
        values = {
            "image_auroc": rank_auroc(scores, truth),
            "image_precision": binary["precision"],
            "image_recall": binary["recall"],
            "image_f1": binary["f1"],
            "image_accuracy": binary["accuracy"],
            "image_best_f1": best_f1,
            "image_best_threshold": best_threshold,
            "image_ap": average_precision(scores, truth) if len(scores) else math.nan,
        }
        for rule in IMAGE_SCORES:
            rule_scores = np.array([r.scores.get(rule, math.nan) for r in self.records], dtype=np.float64)
            values[f"image_auroc/{rule}"] = rank_auroc(rule_scores, truth)
        if image_threshold is None or not len(scores):
            return values
        if math.isnan(image_threshold):  # no operating point could be chosen (one class only): not available
            return values | {"image_threshold": math.nan}
        verdict = classification_metrics(scores, truth, image_threshold)
        values.update(
            {
                "image_threshold": verdict["threshold"],
                "image_defect_recall": verdict["defect_accuracy"],
                "image_false_alarm_rate": verdict["false_alarm_rate"],
                "image_verdict_accuracy": verdict["total_accuracy"],
                "image_verdict_precision": verdict["precision"],
            }
        )
        kinds = np.array([r.kind or "" for r in self.records])
        for kind in sorted({r.kind for r in self.records if r.kind and r.defective}):
            chosen = (kinds == kind) & truth
            values[f"image_defect_recall/{kind}"] = float((scores[chosen] > image_threshold).mean())
        return values

    def compute(self, image_threshold: float | None = None) -> dict[str, float]:
        """All metrics as a flat ``{key: float}``; ratios are fractions (see the module docstring).

        ``image_auroc`` ranks images by the chosen ``image_score`` (``image_auroc/<rule>``: by each
        rule). ``image_precision``/``recall``/``f1``/``accuracy`` call an image defective when any
        pixel is predicted as change. With ``image_threshold`` (chosen on other data, see
        :func:`components.evaluation.verdict.choose_threshold`) the verdict "score above it" is
        judged too: ``image_defect_recall``, ``image_false_alarm_rate`` (over good images),
        ``image_verdict_accuracy`` and ``image_defect_recall/<kind>``.
        """
        tp, fp, fn, tn = self._change_counts()
        change = _binary_scores(tp, fp, fn, tn)
        conf = self.confusion.astype(np.float64)
        diag = np.diag(conf)
        class_iou = [_ratio(d, conf[c, :].sum() + conf[:, c].sum() - d) for c, d in enumerate(diag)]
        class_f1 = [_ratio(2 * d, conf[c, :].sum() + conf[:, c].sum()) for c, d in enumerate(diag)]
        metrics: dict[str, float] = {
            "precision": change["precision"],
            "recall": change["recall"],
            "f1": change["f1"],
            "iou": change["iou"],
            "oa": _ratio(diag.sum(), conf.sum()),
            "miou": _nanmean(class_iou),
            "mf1": _nanmean(class_f1),
        }
        for c in range(self.num_classes):
            metrics[f"class_iou/{c}"] = class_iou[c]
            metrics[f"class_f1/{c}"] = class_f1[c]
        for kind in sorted(self.kind_confusion):
            _, k_fp, k_fn, k_tp = (int(v) for v in self.kind_confusion[kind])
            metrics[f"iou/{kind}"] = _ratio(k_tp, k_tp + k_fp + k_fn)
        num_good = sum(1 for r in self.records if r.kind == GOOD_LABEL)
        if num_good:
            metrics["good_fp_pixels"] = float(self.good_fp_pixels)
            metrics["good_fp_pixels_per_image"] = self.good_fp_pixels / num_good
            metrics["good_fp_rate"] = _ratio(self.good_fp_pixels, self.good_pixels)
            metrics["good_fp_image_rate"] = self.good_fp_images / num_good
        pixel_best_f1, pixel_best_threshold = self._pixel_best_f1()
        metrics["pixel_auroc"] = self.pixel_auroc()
        metrics["pixel_ap"] = self.pixel_average_precision()
        metrics["pixel_best_f1"] = pixel_best_f1
        metrics["pixel_best_threshold"] = pixel_best_threshold
        metrics.update(self._image_metrics(image_threshold))
        metrics["num_images"] = float(len(self.records))
        metrics["num_defect_images"] = float(sum(r.defective for r in self.records))
        metrics["num_good_images"] = float(num_good)
        return metrics

    # ------------------------------------------------------------------ plots

    def plot_pr_curve(self, path: Path | str) -> Path:
        """Write the pixel PR curve (with AP and the operating threshold marked) as a PNG."""
        from components.evaluation.visualize import plot_pr_curve

        precision, recall, thresholds = self.pr_curve()
        k = min(math.floor(self.threshold * self.bins + 1e-9), self.bins - 1)
        return plot_pr_curve(
            path,
            precision,
            recall,
            average_precision=self.pixel_average_precision(),
            operating_point=(float(recall[k]), float(precision[k])),
            operating_label=f"threshold {thresholds[k]:.2f}",
        )


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


__all__ = [
    "GOOD_LABEL",
    "ImageRecord",
    "SegmentationMetrics",
    "best_f1_threshold",
    "format_metrics",
    "is_fraction_key",
    "parse_sample_name",
    "rank_auroc",
    "sample_kind",
    "to_percent",
]
