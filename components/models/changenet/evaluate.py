"""ChangeNet-Segmentation on a split: pixel, per-defect and image metrics, PR curve, overlays.

The shared evaluate stage (:mod:`components.evaluation.stage`) calls :func:`evaluate_split`
through the family and writes ``<artifacts>/metrics/segment.json``; quantization judges its
models with the same function, so every number comes from one evaluation path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from components.config import Params, SegmentEvalParams, TilingParams
from components.evaluation.verdict import choose_threshold, reported_threshold
from components.evaluation.visualize import overlay
from components.imageio import write_png
from components.models.changenet.data import ChangeSegmentDataset, open_split
from components.models.changenet.metrics import SegmentationMetrics

HEADLINE = (
    "precision",
    "recall",
    "f1",
    "iou",
    "oa",
    "miou",
    "mf1",
    "image_auroc",
    "image_defect_recall",
    "image_false_alarm_rate",
    "image_f1",
    "pixel_auroc",
    "pixel_ap",
)


def overlay_names(names: list[str], count: int) -> list[str]:
    """A fixed, spread-out sample of val images for overlays (same names every run)."""
    if count <= 0 or not names:
        return []
    ordered = sorted(names)
    picks = np.linspace(0, len(ordered) - 1, num=min(count, len(ordered))).round().astype(int)
    return [ordered[i] for i in sorted(set(picks.tolist()))]


@torch.inference_mode()
def evaluate_model(
    model: torch.nn.Module,
    dataset: ChangeSegmentDataset,
    setting: SegmentEvalParams,
    num_classes: int = 2,
    keep: set[str] | None = None,
    tiling: TilingParams | None = None,
) -> tuple[SegmentationMetrics, dict[str, np.ndarray]]:
    """Run ``model`` over ``dataset``; return the metrics and overlays for the ``keep`` names.

    With ``tiling`` (``data.tiling``) each native-size pair is judged by sliding windows stitched
    to one full-size map (:func:`~components.models.changenet.tiling.predict_tiled`), so every metric
    and overlay is at full resolution.
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
    threshold, batch_size = setting.threshold, setting.batch_size
    metrics = SegmentationMetrics.from_params(num_classes, setting)
    pictures: dict[str, np.ndarray] = {}
    if tiling is not None:
        from components.models.changenet.tiling import predict_tiled

        for index in range(len(dataset)):
            item = dataset[index]
            name = item["name"]
            prob = predict_tiled(
                model, item["test"], item["golden"], tiling.tile_size, tiling.overlap, batch_size, num_classes
            )
            metrics.update(prob[None], item["mask"][None], [name])
            if keep and name in keep:
                pred = (prob >= threshold).numpy()
                pictures[name] = overlay(item["golden"], item["test"], pred, item["mask"].numpy())
        return metrics, pictures
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in loader:
        logits = model(batch["test"], batch["golden"])
        final = logits[-1] if isinstance(logits, list | tuple) else logits
        prob = torch.softmax(final.float(), dim=1)[:, 1]
        metrics.update(prob, batch["mask"], list(batch["name"]))
        for i, name in enumerate(batch["name"]):
            if keep and name in keep:
                pred = (prob[i] >= threshold).numpy()
                pictures[name] = overlay(batch["golden"][i], batch["test"][i], pred, batch["mask"][i].numpy())
    return metrics, pictures


def image_operating_threshold(model: Any, params: Params) -> float:
    """The pass/defect threshold on the image score, chosen on ``segment.eval.image_threshold_split``.

    The most defective parts caught while flagging at most ``max_false_alarm_rate`` of the good
    ones (:func:`~components.evaluation.verdict.choose_threshold`). The train split is seen
    without augmentation; its scores are optimistic (the model fit those parts), which errs
    towards a higher threshold, so fewer false alarms and fewer catches on new parts.
    """
    setting = params.segment.eval
    dataset = open_split(params, setting.image_threshold_split)
    metrics, _ = evaluate_model(model, dataset, setting, params.segment.model.num_classes, tiling=params.data.tiling)
    scores, defective = metrics.image_scores()
    if defective.all() or not defective.any():  # e.g. a change-detection set: every pair has change
        return math.nan  # no operating point to choose: the verdict is reported as not available
    return choose_threshold(scores, defective, setting.max_false_alarm_rate)


def evaluate_split(
    model: Any,
    params: Params,
    split: str,
    pictures_dir: Path | None = None,
    image_threshold: float | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``split`` (keys without the split prefix); with ``pictures_dir``,
    the PR curve (PNG and CSV) and, for val, overlays of a fixed sample of pairs.

    Other splits than the one the image threshold is chosen on also get the image verdict at
    that threshold (``image_defect_recall``, ``image_false_alarm_rate``, ...): ``image_threshold``
    when given (e.g. the FP32 model's, for its quantized copy), else the one chosen for ``model``.
    """
    dataset = open_split(params, split)
    keep = (
        set(overlay_names(dataset.names, params.segment.eval.num_overlays))
        if split == "val" and pictures_dir
        else set()
    )
    metrics, pictures = evaluate_model(
        model, dataset, params.segment.eval, params.segment.model.num_classes, keep, params.data.tiling
    )
    chosen_here = split == params.segment.eval.image_threshold_split
    image_threshold = reported_threshold(chosen_here, image_threshold, lambda: image_operating_threshold(model, params))
    values = {key: float(value) for key, value in metrics.compute(None if chosen_here else image_threshold).items()}
    values.update(truth_sources(metrics, dataset.pseudo_names))
    if pictures_dir is not None:
        metrics.plot_pr_curve(pictures_dir / f"{split}_pr_curve.png")
        precision, recall, thresholds = metrics.pr_curve()
        _write_pr_csv(pictures_dir / f"{split}_pr_curve.csv", precision, recall, thresholds)
        for name, picture in pictures.items():
            write_png(pictures_dir / "overlays" / f"{name}.png", picture)
    return values


def truth_sources(metrics: SegmentationMetrics, pseudo: frozenset[str]) -> dict[str, float]:
    """What the split was judged against, when any pair's truth is MAL's mask of its boxes.

    ``truth/mal_pseudo_pairs`` and ``truth/painted_pairs`` count the pairs judged against MAL
    pseudo-masks (boxes-only pairs, ``segment.train.labels: mal``) and against painted masks;
    ``mal_pseudo/iou`` and ``painted/iou`` are the change-IoU over each group alone (``nan`` for an
    empty group). Nothing is added when every pair has a painted mask (or is a known good part).
    """
    if not pseudo:
        return {}
    values: dict[str, float] = {}
    for group, members in (
        ("mal_pseudo", [r for r in metrics.records if r.name in pseudo]),
        ("painted", [r for r in metrics.records if r.name not in pseudo]),
    ):
        tp, fp, fn = (sum(getattr(r, key) for r in members) for key in ("tp", "fp", "fn"))
        values[f"truth/{group}_pairs"] = float(len(members))
        values[f"{group}/iou"] = tp / (tp + fp + fn) if tp + fp + fn else math.nan
    return values


def _write_pr_csv(path: Path, precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray) -> None:
    step = max(1, len(thresholds) // 200)  # a readable curve for `dvc plots`
    rows = ["threshold,precision,recall"]
    rows += [
        f"{t:.4f},{p:.6f},{r:.6f}"
        for t, p, r in zip(thresholds[::step], precision[::step], recall[::step], strict=False)
    ]
    path.write_text("\n".join(rows) + "\n")
