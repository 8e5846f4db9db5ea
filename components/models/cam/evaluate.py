"""The CAM classifier on a split: the image verdict at an honest threshold, the heatmap box against the truth.

The shared evaluate stage calls :func:`evaluate_split` through the family; quantization judges its
models with the same function. ``model`` is anything that reads images: the torch
:class:`~components.models.cam.model.CamClassifier` (``forward_with_cam``), an onnxruntime session
of the export (:class:`~components.export.runtime.OnnxModel`, both outputs read by name) or a
quantized torch model; :func:`predict` reads all of them.

**The operating threshold** (``cam.eval.threshold: auto``) is chosen on ``cam.eval.threshold_split``
(train by default) by :func:`~components.evaluation.verdict.choose_threshold`, exactly as
ChangeNet-Classification does, and never on the split being reported. Asked to report the
threshold split itself, only threshold-free numbers are given (AUROC, AP, localisation).

**Localisation** (:mod:`.heatmap`, :mod:`.metrics`): every defective image with a true mask,
whatever the call, gets the IoU of its CAM box (the best-overlapping one in ``box_mode: all``)
with the box around its mask. Per defect kind where names carry one (``<kind>/accuracy``,
``<kind>/box_iou``, ...). A split read from image-label lists (a source without masks, e.g. class
folders) has no true box: its box numbers are ``nan`` (``null`` in the metrics file) and
``localised_images`` is 0, and the log says so; the verdict numbers are as always.

**Pictures** (with a ``pictures_dir``): ``<split>_roc_curve.png``, ``<split>_scores.csv`` (score,
call, boxes and IoU of every image: what the label chain reads) and ``overlays/<split>_<name>.png``
for a fixed sample of images, defects first: the image with the true mask's outline | the heatmap
over the image | the CAM box (red) and the true box (green).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import DataLoader

from components.config import CamEvalParams, Params
from components.evaluation.calibration import CALIBRATION, split_off
from components.evaluation.verdict import reported_threshold
from components.evaluation.visualize import PREDICTION_COLOR, TRUTH_COLOR, mask_outline, plot_curve, to_uint8_rgb
from components.fsutil import atomic_file
from components.imageio import write_png
from components.models.cam.data import CamDataset
from components.models.cam.heatmap import Box, best_iou, heatmap_to_boxes, mask_to_box
from components.models.cam.metrics import choose_threshold, localisation_metrics, roc_curve, verdict_metrics
from components.models.cam.model import ONNX_OUTPUT_NAMES, anomaly_score

__all__ = [
    "SplitPredictions",
    "dataset_for",
    "evaluate_split",
    "heatmap_colors",
    "image_size",
    "operating_threshold",
    "overlay_cam",
    "overlay_picks",
    "predict",
    "predict_split",
]

THRESHOLD_FREE = ("auroc", "ap", "parts", "defects")
_log = logging.getLogger(__name__)


def image_size(params: Params) -> int:
    """Side of the images the model reads: ``cam.input_size``, else the prepared ``data.image_size``."""
    return params.cam.input_size or params.data.image_size


def dataset_for(params: Params, split: str) -> CamDataset:
    """The un-augmented ``split`` as the model was trained to read it (``calibration``: the train
    parts held out of training, :mod:`components.evaluation.calibration`)."""
    dataset = CamDataset(
        params.datasets_dir,
        "train" if split == CALIBRATION else split,
        image_size(params),
        augment=None,
        seed=params.seed,
    )
    if split == CALIBRATION:
        split_off(dataset, params.data.calibration_fraction, params.seed, calibration=True)
    return dataset


def predict(model: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits (N, 2), heatmap (N, H, W) or None)`` from any model that reads images (module docstring)."""
    heatmap: Any = None
    if hasattr(model, "forward_with_cam"):
        logits, heatmap = model.forward_with_cam(images)
    elif hasattr(model, "run_numpy") and "logits" in getattr(model, "output_names", ()):
        outputs = dict(zip(model.output_names, model.run_numpy(images.detach().cpu().numpy()), strict=True))
        logits, heatmap = outputs["logits"], outputs.get("heatmap")
    else:
        outputs = model(images)
        if isinstance(outputs, list | tuple):
            named = dict(zip(ONNX_OUTPUT_NAMES, outputs, strict=True))
            logits, heatmap = named["logits"], named["heatmap"]
        else:
            logits = outputs
    logits = torch.as_tensor(logits).float()
    if heatmap is not None:
        heatmap = torch.as_tensor(heatmap).float()
        heatmap = heatmap[:, 0] if heatmap.dim() == 4 else heatmap
    return logits, heatmap


@dataclass
class SplitPredictions:
    """What the model said about every image of a split, in list order."""

    names: list[str]
    kinds: list[str | None]
    labels: np.ndarray  # bool, anomaly
    scores: np.ndarray  # anomaly probability
    boxes: list[list[Box]] = field(default_factory=list)
    true_boxes: list[Box | None] = field(default_factory=list)
    ious: np.ndarray = field(default_factory=lambda: np.zeros(0))  # nan where there is no true box
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # only the kept names


@torch.inference_mode()
def predict_split(
    model: Any, dataset: CamDataset, setting: CamEvalParams, localise: bool = True, keep: set[str] | None = None
) -> SplitPredictions:
    """Scores of every image of ``dataset``; with ``localise``, CAM boxes and their IoU with the true box."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    result = SplitPredictions(list(dataset.names), list(dataset.kinds), np.zeros(0, bool), np.zeros(0))
    scores, ious = [], []
    for batch in DataLoader(dataset, batch_size=setting.batch_size, shuffle=False):
        logits, heatmap = predict(model, batch["image"])
        scores.append(anomaly_score(logits).numpy())
        if not localise:
            continue
        for i, name in enumerate(batch["name"]):
            mask = batch["mask"][i].numpy()
            truth = mask_to_box(mask) if int(batch["label"][i]) and bool(batch["has_mask"][i]) else None
            boxes = (
                []
                if heatmap is None
                else heatmap_to_boxes(heatmap[i], setting.box_threshold, setting.box_mode, setting.min_box_area)
            )
            result.boxes.append(boxes)
            result.true_boxes.append(truth)
            ious.append(best_iou(boxes, truth) if heatmap is not None else float("nan"))
            if keep and name in keep and heatmap is not None:
                result.heatmaps[name] = heatmap[i].numpy()
    result.labels = np.asarray(dataset.labels, dtype=bool)
    result.scores = np.concatenate(scores).astype(np.float64)
    result.ious = np.asarray(ious, dtype=np.float64)
    return result


def operating_threshold(model: Any, params: Params) -> float:
    """``cam.eval.threshold``, or with ``auto`` the one chosen on ``threshold_split``."""
    setting = params.cam.eval
    if setting.threshold != "auto":
        return float(setting.threshold)
    seen = predict_split(model, dataset_for(params, setting.threshold_split), setting, localise=False)
    return choose_threshold(seen.scores, seen.labels, setting.max_false_alarm_rate)


def overlay_picks(names: list[str], labels: np.ndarray, count: int) -> set[str]:
    """A fixed, spread-out sample of ``count`` names, defective images first (the same every run)."""
    picks: list[str] = []
    for group in (
        [n for n, bad in zip(names, labels, strict=True) if bad],
        [n for n, bad in zip(names, labels, strict=True) if not bad],
    ):
        room = count - len(picks)
        if room <= 0 or not group:
            continue
        ordered = sorted(group)
        chosen = np.linspace(0, len(ordered) - 1, num=min(room, len(ordered))).round().astype(int)
        picks += [ordered[i] for i in sorted(set(chosen.tolist()))]
    return set(picks)


def evaluate_split(
    model: Any,
    params: Params,
    split: str,
    pictures_dir: Path | None = None,
    threshold: float | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``split`` (keys without the split prefix); pictures when a folder is given.

    The verdict is at ``threshold`` when given (e.g. the FP32 model's, for its quantized copy), else
    at the one chosen for ``model``; on the threshold split itself, only threshold-free numbers.
    """
    setting = params.cam.eval
    dataset = dataset_for(params, split)
    labels = np.asarray(dataset.labels, dtype=bool)
    keep = overlay_picks(dataset.names, labels, setting.num_overlays) if pictures_dir is not None else set()
    seen = predict_split(model, dataset, setting, localise=True, keep=keep)
    if not dataset.has_masks:
        _log.info("CAM %s: no masks (image labels only), the box IoU is not measured", split)
    reports_threshold_split = setting.threshold == "auto" and split == setting.threshold_split
    threshold = reported_threshold(reports_threshold_split, threshold, lambda: operating_threshold(model, params))
    metrics = verdict_metrics(seen.scores, seen.labels, threshold)
    if reports_threshold_split:
        metrics = {k: v for k, v in metrics.items() if k in THRESHOLD_FREE}
    metrics.update(localisation_metrics(seen.ious))
    kinds = np.asarray([k or "" for k in seen.kinds])
    for kind in sorted({k for k in seen.kinds if k}):
        chosen = kinds == kind
        if not reports_threshold_split:
            metrics[f"{kind}/accuracy"] = float(((seen.scores[chosen] > threshold) == seen.labels[chosen]).mean())
        if seen.labels[chosen].any():
            per_kind = localisation_metrics(seen.ious[chosen])
            metrics.update({f"{kind}/{k}": v for k, v in per_kind.items() if k != "localised_images"})
    if pictures_dir is not None:
        _write_pictures(Path(pictures_dir), split, dataset, seen, threshold)
    return metrics


# ------------------------------------------------------------------------------------ pictures


def heatmap_colors(heatmap: np.ndarray) -> np.ndarray:
    """``HxW`` values in [0, 1] -> ``HxWx3`` uint8 in a jet-like blue-cyan-yellow-red ramp (no matplotlib needed)."""
    x = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # red, green, blue peaks
    rgb = np.clip(1.5 - np.abs(4.0 * x - 4.0 * centres), 0.0, 1.0)
    return np.rint(rgb * 255.0).astype(np.uint8)


def overlay_cam(
    image: Any,
    heatmap: np.ndarray,
    boxes: list[Box],
    true_mask: Any,
    true_box: Box | None,
    caption: str = "",
    alpha: float = 0.5,
    gap: int = 4,
) -> np.ndarray:
    """``image + true mask outline | heatmap over the image | CAM boxes (red), true box (green)`` as uint8 HxWx3."""
    rgb = to_uint8_rgb(image)
    height = rgb.shape[0]
    mask = np.asarray(true_mask) != 0
    truth_panel = rgb.copy()
    truth_panel[mask_outline(mask)] = TRUTH_COLOR
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heatmap_colors(heatmap).astype(np.float32)
    heat_panel = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    box_image = Image.fromarray(rgb.copy())
    draw = ImageDraw.Draw(box_image)
    if true_box is not None:
        draw.rectangle([true_box[0], true_box[1], true_box[2] - 1, true_box[3] - 1], outline=TRUTH_COLOR, width=2)
    for box in boxes:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=PREDICTION_COLOR, width=2)
    separator = np.full((height, gap, 3), 255, dtype=np.uint8)
    row = np.concatenate([truth_panel, separator, heat_panel, separator, np.asarray(box_image)], axis=1)
    header = Image.new("RGB", (row.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(header).text((2, 1), caption, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.concatenate([np.asarray(header), row], axis=0)


def _box_text(box: Box | None) -> str:
    return "" if box is None else " ".join(str(v) for v in box)


def _write_pictures(folder: Path, split: str, dataset: CamDataset, seen: SplitPredictions, threshold: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fpr, tpr, _ = roc_curve(seen.scores, seen.labels)
    operating = None
    if threshold == threshold:
        flagged = seen.scores > threshold
        operating = (
            float(flagged[~seen.labels].mean()) if (~seen.labels).any() else 0.0,
            float(flagged[seen.labels].mean()) if seen.labels.any() else 0.0,
        )
    plot_curve(
        folder / f"{split}_roc_curve.png",
        fpr,
        tpr,
        title=f"{split} image ROC (CAM classifier)",
        xlabel="false positive rate (good parts flagged)",
        ylabel="true positive rate (defects caught)",
        operating_point=operating,
        diagonal=True,
    )
    buffer = io.StringIO()
    columns = ["name", "kind", "anomaly", "score", "called_anomaly", "boxes", "true_box", "iou"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for index, name in enumerate(seen.names):
        iou = seen.ious[index]
        writer.writerow(
            {
                "name": name,
                "kind": seen.kinds[index] or "",
                "anomaly": int(seen.labels[index]),
                "score": f"{seen.scores[index]:.6f}",
                "called_anomaly": "" if threshold != threshold else int(seen.scores[index] > threshold),
                "boxes": ";".join(_box_text(b) for b in seen.boxes[index]),
                "true_box": _box_text(seen.true_boxes[index]),
                "iou": "" if iou != iou else f"{iou:.4f}",
            }
        )
    with atomic_file(folder / f"{split}_scores.csv") as handle:
        handle.write(buffer.getvalue())
    index_of = {name: i for i, name in enumerate(seen.names)}
    for name, heatmap in sorted(seen.heatmaps.items()):
        index = index_of[name]
        sample = dataset[index]
        score = seen.scores[index]
        call = "" if threshold != threshold else f" -> {'anomaly' if score > threshold else 'good'}"
        iou = seen.ious[index]
        caption = f"{name}: score {score:.3f}{call}" + ("" if iou != iou else f", box IoU {iou:.2f}")
        picture = overlay_cam(
            sample["image"], heatmap, seen.boxes[index], sample["mask"].numpy(), seen.true_boxes[index], caption
        )
        write_png(folder / "overlays" / f"{split}_{name}.png", picture)
