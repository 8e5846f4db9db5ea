"""Good or anomaly, and where: the CAM classifier on image files.

``--images`` is one image or a folder of them (any size, grey or colour: each is read as RGB and
resized to the model's input, as training saw its images). Every image gets the anomaly score,
the call at the operating threshold and, when called anomalous, the CAM box(es) in the image's
own pixels; with an output folder, an overlay per image (the heatmap over the image, boxes in red)
and ``cam_results.csv`` are written, the CSV atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import ImageDraw

from components.config import CamEvalParams
from components.data.layout import IMAGE_SUFFIXES
from components.fsutil import atomic_file
from components.imageio import image_size, write_png
from components.models.cam.data import load_image
from components.models.cam.evaluate import heatmap_colors, predict
from components.models.cam.heatmap import Box, heatmap_to_boxes
from components.models.cam.model import anomaly_score

__all__ = ["CamInputError", "CamResult", "find_images", "infer_cam", "write_cam_results"]


class CamInputError(ValueError):
    """No readable image where one was promised; the message names the path."""


@dataclass(frozen=True)
class CamResult:
    name: str
    score: float
    threshold: float
    boxes: list[Box]
    """In the input image's pixels; empty when the image is called good."""

    @property
    def anomalous(self) -> bool:
        return self.score > self.threshold

    @property
    def verdict(self) -> str:
        return "ANOMALY" if self.anomalous else "GOOD"


def find_images(path: Path) -> list[Path]:
    """``path`` itself, or the images of the folder ``path`` in name order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CamInputError(f"{path}: no such file or folder")
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise CamInputError(f"{path}: no image ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return images


def _to_image_pixels(box: Box, width: int, height: int, size: int) -> Box:
    x1, y1, x2, y2 = box
    sx, sy = width / size, height / size
    return (round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy))


def _overlay(image: torch.Tensor, heatmap: np.ndarray, boxes: list[Box], alpha: float = 0.5) -> np.ndarray:
    from PIL import Image

    rgb = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heatmap_colors(heatmap).astype(np.float32)
    picture = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for x1, y1, x2, y2 in boxes:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(255, 0, 0), width=2)
    return np.asarray(picture)


@torch.inference_mode()
def infer_cam(
    model: torch.nn.Module,
    images: Path,
    size: int,
    setting: CamEvalParams,
    threshold: float,
    out: Path | None = None,
) -> list[CamResult]:
    """Score, call and box every image under ``images``; overlays and a CSV into ``out`` when given."""
    model.eval()
    results: list[CamResult] = []
    for path in find_images(images):
        width, height = image_size(path)
        image = load_image(path, size)
        logits, heatmap = predict(model, image[None])
        score = float(anomaly_score(logits)[0])
        boxes_model = heatmap_to_boxes(heatmap[0], setting.box_threshold, setting.box_mode, setting.min_box_area)
        called = score > threshold
        boxes = [_to_image_pixels(b, width, height, size) for b in boxes_model] if called else []
        results.append(CamResult(path.stem, score, threshold, boxes))
        if out is not None:
            write_png(
                Path(out) / f"{path.stem}_cam.png", _overlay(image, heatmap[0].numpy(), boxes_model if called else [])
            )
    if out is not None:
        write_cam_results(out, [(r.name, r.score, r.threshold, r.verdict, r.boxes) for r in results])
    return results


def write_cam_results(out: Path, rows: Sequence[tuple[str, float, float, str, Sequence[Box]]]) -> Path:
    """``<out>/cam_results.csv``: name, score, threshold, verdict and boxes (``x1 y1 x2 y2``, ``;``-separated)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "score", "threshold", "verdict", "boxes"])
    for name, score, threshold, verdict, boxes in rows:
        cells = ";".join(" ".join(str(v) for v in box) for box in boxes)
        writer.writerow([name, f"{score:.6f}", f"{threshold:.6f}", verdict, cells])
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / "cam_results.csv"
    with atomic_file(path) as handle:
        handle.write(buffer.getvalue())
    return path
