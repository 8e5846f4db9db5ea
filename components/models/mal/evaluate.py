"""MAL on a split: mask IoU of every box against its true mask, beside two baselines, and overlays.

Each annotated instance of ``datasets/coco/<split>.json`` is scored three ways, on the same
boxes and the same true masks:

- ``miou``: MAL's mask (student, 1.3x test crop, pasted back, thresholded: :mod:`.predict`);
- ``baseline_box/miou``: the filled box itself, what a labeller gets for free;
- ``baseline_crf/miou``: the box refined by the same mean-field CRF MAL trains with, on the image
  alone (started from the box, no network): what colour alone recovers, so the gap to ``miou``
  is what learning adds.

Each comes overall, per defect kind (``miou/<category>``) and per COCO size bucket. Pictures:
for a fixed sample of instances, the crop with its box, the predicted mask and the true mask.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from components.config import Params
from components.data.formats import DatasetLayout
from components.imageio import read_image, write_png
from components.models.mal.crops import box_mask_in_crop, crop_and_resize, paste_mask, test_crop_box
from components.models.mal.losses import color_affinity, mean_field
from components.models.mal.metrics import InstanceIoU, mask_iou
from components.models.mal.predict import predict_instance_masks

CRF_RESOLUTION_DIVISOR = 8
"""The CRF baseline runs at ``crop_size / 8``, the resolution MAL's own CRF loss works at."""
PICTURE_SIZE = 160


class MalEvaluationError(ValueError):
    """A split that cannot be scored (no COCO file, an annotation without a true mask)."""


def evaluate_split(model: Any, params: Params, split: str, pictures_dir: Path | None = None) -> dict[str, float]:
    """MAL's and the baselines' mask IoUs on ``split`` (keys without the split prefix)."""
    from components.labeling.rle import annotation_mask

    document, _ = _read_coco(params, split)
    names = {c["id"]: c["name"] for c in document.get("categories", [])}
    images = {image["id"]: image for image in document["images"]}
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for annotation in document["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    shown = _picture_ids(document["annotations"], params.mal.eval.num_overlays if pictures_dir else 0)
    learned, crf = InstanceIoU(), InstanceIoU()
    agreement: dict[str, list[tuple[float, float]]] = {"box": [], "baseline_crf/box": []}
    for image_id in tqdm(sorted(by_image), desc=f"MAL {split}", unit="image", leave=False):
        record = images[image_id]
        image = read_image(params.datasets_dir / record["file_name"])
        annotations = by_image[image_id]
        boxes = np.array([_xyxy(a["bbox"]) for a in annotations], dtype=np.float64)
        masks, _ = predict_instance_masks(
            model,
            image,
            boxes,
            params.mal.model.crop_size,
            params.mal.eval.test_margin,
            params.mal.eval.mask_threshold,
            params.mal.eval.batch_size,
        )
        crf_masks = crf_baseline(image, boxes, params)
        for annotation, box, mask, crf_mask in zip(annotations, boxes, masks, crf_masks, strict=True):
            agreement["box"].append(box_agreement(mask, box))
            agreement["baseline_crf/box"].append(box_agreement(crf_mask, box))
            if not annotation.get("segmentation"):  # boxes only: no outline to score the mask against
                continue
            true = annotation_mask(annotation, image.shape[0], image.shape[1])
            category = names.get(annotation["category_id"], str(annotation["category_id"]))
            area = float(annotation["bbox"][2] * annotation["bbox"][3])
            box_iou = mask_iou(box_mask(box, image.shape[:2]), true)
            learned.update(annotation["id"], category, area, mask_iou(mask, true), box_iou)
            crf.update(annotation["id"], category, area, mask_iou(crf_mask, true))
            if pictures_dir is not None and annotation["id"] in shown:
                picture = overlay_instance(image, box, mask, true, params.mal.eval.test_margin)
                write_png(pictures_dir / "overlays" / f"{split}_ann{annotation['id']}_{category}.png", picture)
    results = _box_measures(agreement, len(document["annotations"]) - len(learned.records))
    if not learned.records:  # no true outline in the split: box-only measures alone
        return results
    results.update(learned.summary())
    box_summary = {k: v for k, v in _box_summary(learned).items()}
    results.pop("miou_box", None)
    results.update({f"baseline_box/{k}": v for k, v in box_summary.items()})
    results.update({f"baseline_crf/{k}": v for k, v in crf.summary().items() if not k.startswith("instances")})
    return results


def box_agreement(mask: np.ndarray, box_xyxy: np.ndarray) -> tuple[float, float]:
    """``(projection IoU, fill)`` of one mask with its box: what can be judged without a true outline.

    *Projection IoU*: the mean over the two axes of the IoU between the columns (rows) the mask
    touches and those the box spans: MAL's own MIL criterion (a tight box has object in each of its
    rows and columns), 1.0 when the mask reaches every side of the box. *Fill*: mask area over box
    area; a filled box scores projection 1.0 with fill 1.0, so the two are read together.
    """
    height, width = mask.shape
    x0, y0 = max(0, int(np.floor(box_xyxy[0]))), max(0, int(np.floor(box_xyxy[1])))
    x1, y1 = min(width, int(np.ceil(box_xyxy[2]))), min(height, int(np.ceil(box_xyxy[3])))
    in_box = np.zeros(width, dtype=bool), np.zeros(height, dtype=bool)
    in_box[0][x0:x1], in_box[1][y0:y1] = True, True
    touched = mask.any(axis=0), mask.any(axis=1)
    ious = [float((t & b).sum() / max(1, (t | b).sum())) for t, b in zip(touched, in_box, strict=True)]
    area = max(1, (x1 - x0) * (y1 - y0))
    return float(np.mean(ious)), float(mask[y0:y1, x0:x1].sum() / area)


def _box_measures(agreement: dict[str, list[tuple[float, float]]], unscored: int) -> dict[str, float]:
    """``box/projection_iou``, ``box/fill`` (MAL) and the CRF baseline's, over every box; ``unscored_instances``:
    boxes without a true outline (left out of ``miou``)."""
    values: dict[str, float] = {"unscored_instances": float(unscored)}
    for prefix, pairs in agreement.items():
        if pairs:
            values[f"{prefix}/projection_iou"] = float(np.mean([p for p, _ in pairs]))
            values[f"{prefix}/fill"] = float(np.mean([f for _, f in pairs]))
    values["box/instances"] = float(len(agreement["box"]))
    return values


def _read_coco(params: Params, split: str) -> tuple[dict[str, Any], Path]:
    path = DatasetLayout(params.datasets_dir).coco_json(split)
    if not path.is_file():
        raise MalEvaluationError(f"{path}: COCO file not found (run the prepare stage first)")
    return json.loads(path.read_text()), path


def _xyxy(bbox: list[float]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)
    return x, y, x + w, y + h


def box_mask(box_xyxy: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """The filled box as a full-image mask: every pixel the box touches."""
    height, width = image_hw
    x0, y0, x1, y1 = box_xyxy
    mask = np.zeros((height, width), dtype=bool)
    mask[
        max(0, int(np.floor(y0))) : min(height, int(np.ceil(y1))),
        max(0, int(np.floor(x0))) : min(width, int(np.ceil(x1))),
    ] = True
    return mask


def _box_summary(learned: InstanceIoU) -> dict[str, float]:
    """The filled-box baseline cut the same ways as MAL's numbers."""
    boxes = InstanceIoU()
    for record in learned.records:
        boxes.update(record.ann_id, record.category, record.box_area, record.box_iou or 0.0)
    return {k: v for k, v in boxes.summary().items() if not k.startswith("instances")}


@torch.no_grad()
def crf_baseline(image: np.ndarray, boxes_xyxy: np.ndarray, params: Params) -> list[np.ndarray]:
    """Each box refined by MAL's mean-field CRF on the image alone, started from the box itself."""
    size = params.mal.model.crop_size
    low = max(8, size // CRF_RESOLUTION_DIVISOR)
    mean = torch.tensor(params.mal.model.mean).view(1, 3, 1, 1)
    std = torch.tensor(params.mal.model.std).view(1, 3, 1, 1)
    masks = []
    for box in boxes_xyxy:
        crop_box = test_crop_box(box, params.mal.eval.test_margin)
        crop = torch.from_numpy(crop_and_resize(image, crop_box, size) / 255.0).permute(2, 0, 1)[None].float()
        inside = torch.from_numpy(box_mask_in_crop(box, crop_box, size))[None, None].float()
        crop_low = F.interpolate((crop - mean) / std, size=(low, low), mode="bilinear", align_corners=False)
        inside_low = F.interpolate(inside, size=(low, low), mode="bilinear", align_corners=False)
        affinity = color_affinity(crop_low, zeta=params.mal.train.crf_zeta)
        refined = mean_field(inside_low, inside_low, affinity, params.mal.train.crf_iterations)
        probs = F.interpolate(refined, size=(size, size), mode="bilinear", align_corners=False) * inside
        full = paste_mask(probs[0, 0].numpy(), crop_box, image.shape[:2])
        masks.append(full > 0.5)
    return masks


def _picture_ids(annotations: list[dict[str, Any]], count: int) -> set[int]:
    """A fixed, spread-out sample of annotation ids (the same every run)."""
    ids = sorted(a["id"] for a in annotations)
    if count <= 0 or not ids:
        return set()
    picks = np.linspace(0, len(ids) - 1, num=min(count, len(ids))).round().astype(int)
    return {ids[i] for i in picks}


def overlay_instance(
    image: np.ndarray, box_xyxy: np.ndarray, predicted: np.ndarray, true: np.ndarray, margin: float
) -> np.ndarray:
    """``[crop with box | predicted mask in red | true mask in green]``, each ``PICTURE_SIZE`` square."""
    crop_box = test_crop_box(box_xyxy, margin)
    crop = crop_and_resize(image, crop_box, PICTURE_SIZE).astype(np.float32)
    inside = box_mask_in_crop(box_xyxy, crop_box, PICTURE_SIZE) > 0.5
    outline = inside & ~_erode(inside)
    panels = []
    for mask, colour in ((None, None), (predicted, (255, 60, 60)), (true, (60, 220, 60))):
        panel = crop.copy()
        if mask is not None:
            region = crop_and_resize(mask.astype(np.float32)[..., None], crop_box, PICTURE_SIZE)[..., 0] > 0.5
            panel[region] = 0.45 * panel[region] + 0.55 * np.array(colour, dtype=np.float32)
        panel[outline] = (255, 255, 255)
        panels.append(panel)
    return np.concatenate(panels, axis=1).clip(0, 255).astype(np.uint8)


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


__all__ = ["MalEvaluationError", "box_agreement", "box_mask", "crf_baseline", "evaluate_split", "overlay_instance"]
