"""ChangeNet-Classification on a split: TAO's metrics at an honest threshold, ROC curve, misclassified parts.

The shared evaluate stage calls :func:`evaluate_split` through the family; quantization judges
its models with the same function. ``model`` is anything with the model's call signature:
the torch model (logits or distances), an onnxruntime session of the export (defect scores)
or a quantized model; :func:`scores_of` reads all of them as scores.

**The operating threshold** (``classify.eval.threshold: auto``) is chosen on
``classify.eval.threshold_split`` (train by default, or the held-out test split) by
:func:`~components.models.changenet_classify.metrics.choose_threshold`, and never on the split
being reported: picking it on val and then reporting val's false alarms would grade the model
on what tuned it. Asked to report the threshold split itself, only the threshold-free AUROC and
AP are given.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import DataLoader

from components.config import Params
from components.evaluation.calibration import CALIBRATION, split_off
from components.evaluation.verdict import reported_threshold
from components.evaluation.visualize import plot_curve, to_uint8_rgb
from components.fsutil import atomic_file
from components.imageio import write_png
from components.models.changenet_classify.data import ClassifyDataset
from components.models.changenet_classify.metrics import choose_threshold, classification_metrics, roc_curve
from components.models.changenet_classify.model import defect_score, unstack_lights

__all__ = ["dataset_for", "evaluate_split", "operating_threshold", "part_montage", "score_split", "scores_of"]

THRESHOLD_FREE = ("auroc", "ap", "parts", "defects")


def dataset_for(params: Params, split: str) -> ClassifyDataset:
    """The un-augmented ``split`` as the model was trained to read it (``calibration``: the train
    parts held out of training, :mod:`components.evaluation.calibration`)."""
    dataset = ClassifyDataset(
        params.datasets_dir,
        "train" if split == CALIBRATION else split,
        lights=params.data.lighting_conditions,
        num_golden=params.data.num_golden,
        input_size=params.classify.input_size,
        augment=None,
        seed=params.seed,
    )
    if split == CALIBRATION:
        split_off(dataset, params.data.calibration_fraction, params.seed, calibration=True)
    return dataset


def scores_of(outputs: Any) -> torch.Tensor:
    """Defect scores ``(N,)`` from logits ``(N, 2)``, distances ``(N,)`` or exported scores ``(N,)``/``(N, 1)``."""
    outputs = torch.as_tensor(outputs)
    if outputs.dim() == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    return defect_score(outputs)


@torch.inference_mode()
def score_split(model: Any, dataset: ClassifyDataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)`` of every row of ``dataset``, in CSV order."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    scores, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        golden = batch["golden"]
        scores.append(scores_of(model(batch["test"], golden[:, 0] if golden.shape[1] == 1 else golden)).numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(scores).astype(np.float64), np.concatenate(labels).astype(bool)


def operating_threshold(model: Any, params: Params) -> float:
    """``classify.eval.threshold``, or with ``auto`` the one chosen on ``threshold_split``."""
    setting = params.classify.eval
    if setting.threshold != "auto":
        return float(setting.threshold)
    scores, labels = score_split(model, dataset_for(params, setting.threshold_split), setting.batch_size)
    return choose_threshold(scores, labels, setting.max_false_alarm_rate)


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
    setting = params.classify.eval
    dataset = dataset_for(params, split)
    scores, labels = score_split(model, dataset, setting.batch_size)
    reports_threshold_split = setting.threshold == "auto" and split == setting.threshold_split
    threshold = reported_threshold(reports_threshold_split, threshold, lambda: operating_threshold(model, params))
    metrics = classification_metrics(scores, labels, threshold)
    if reports_threshold_split:
        metrics = {k: v for k, v in metrics.items() if k in THRESHOLD_FREE}
    kinds = [row.label for row in dataset.rows]
    for kind in sorted({k for k, bad in zip(kinds, labels, strict=True) if bad}):
        chosen = np.array([k == kind for k in kinds])
        if not reports_threshold_split:
            metrics[f"{kind}/defect_accuracy"] = float((scores[chosen] > threshold).mean())
    if pictures_dir is not None:
        _write_pictures(pictures_dir, split, dataset, scores, labels, threshold, params)
    return metrics


# ------------------------------------------------------------------------------------ pictures


def _write_pictures(
    folder: Path,
    split: str,
    dataset: ClassifyDataset,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    params: Params,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fpr, tpr, _ = roc_curve(scores, labels)
    operating = None
    if threshold == threshold:
        flagged = scores > threshold
        operating = (
            float(flagged[~labels].mean()) if (~labels).any() else 0.0,
            float(flagged[labels].mean()) if labels.any() else 0.0,
        )
    plot_curve(
        folder / f"{split}_roc_curve.png",
        fpr,
        tpr,
        title=f"{split} image ROC",
        xlabel="false positive rate (good parts flagged)",
        ylabel="true positive rate (defects caught)",
        operating_point=operating,
        diagonal=True,
    )
    rows = [
        {
            "object_name": row.object_name,
            "label": row.label,
            "defect": int(bad),
            "score": f"{score:.6f}",
            "called_defect": "" if threshold != threshold else int(score > threshold),
        }
        for row, score, bad in zip(dataset.rows, scores, labels, strict=True)
    ]
    _write_csv(folder / f"{split}_scores.csv", rows)
    if threshold != threshold:
        return
    wrong = [i for i, (s, bad) in enumerate(zip(scores, labels, strict=True)) if (s > threshold) != bad]
    wrong.sort(key=lambda i: -abs(scores[i] - threshold))  # the most confident mistakes first
    table = [
        "| part | label | score | threshold | call | picture |",
        "|---|---|---:|---:|---|---|",
    ]
    for rank, index in enumerate(wrong):
        row = dataset.rows[index]
        call = "defect" if scores[index] > threshold else "PASS"
        picture = ""
        if rank < params.classify.eval.num_misclassified:
            sample = dataset[index]
            lights = dataset.lights
            image = part_montage(
                unstack_lights(sample["test"], len(lights)),
                unstack_lights(sample["golden"][0], len(lights)),
                lights,
                f"{row.object_name}: {row.label}, score {scores[index]:.3f} (threshold {threshold:.3f}) -> {call}",
            )
            relative = f"misclassified/{split}/{row.object_name}.png"
            write_png(folder / relative, image)
            picture = f"![{row.object_name}]({relative})"
        table.append(
            f"| {row.object_name} | {row.label} | {scores[index]:.4f} | {threshold:.4f} | {call} | {picture} |"
        )
    if not wrong:
        table.append("| (none) | | | | | |")
    with atomic_file(folder / f"{split}_misclassified.md") as handle:
        handle.write(f"# Misclassified parts on {split}\n\n" + "\n".join(table) + "\n")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["object_name"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_file(path) as handle:
        handle.write(buffer.getvalue())


def part_montage(test: torch.Tensor, golden: torch.Tensor, lights: Sequence[str], caption: str) -> np.ndarray:
    """One row per light: golden | test, with the light's name, under a caption line."""
    gap, header = 4, 14
    panels = []
    for light, t, g in zip(lights, test, golden, strict=True):
        row = np.concatenate([to_uint8_rgb(g), np.full((t.shape[-2], gap, 3), 255, np.uint8), to_uint8_rgb(t)], axis=1)
        label = Image.new("RGB", (row.shape[1], header), (255, 255, 255))
        ImageDraw.Draw(label).text((2, 1), f"{light}: golden | test", fill=(0, 0, 0), font=ImageFont.load_default())
        panels += [np.asarray(label), row]
    body = np.concatenate(panels, axis=0)
    title = Image.new("RGB", (body.shape[1], header + 2), (255, 255, 255))
    ImageDraw.Draw(title).text((2, 2), caption, fill=(160, 0, 0), font=ImageFont.load_default())
    return np.concatenate([np.asarray(title), body], axis=0)
