"""``inspectops label cam``: image labels in, defect boxes out, as COCO for the mask auto-labeler.

The trained CAM classifier reads every image of a prepared split; each image it calls an
anomaly (anomaly probability at or above the operating threshold, chosen as its evaluation
chooses it) gets the box(es) of its class-activation map, with the probability as ``score``.
Images called good are listed without annotations, so MAL and ChangeNet see the whole split.
``file_name`` is the segmentation A image relative to the datasets root, exactly as prepare's
own COCO files, so ``inspectops label mal --coco OUT --images <datasets>`` takes the result
as it is: image labels -> boxes -> masks, with no hand-drawn region.

The file is written atomically (:func:`components.fsutil.write_json`).

The ``label_cam`` stage (:func:`label_cam_stage`) writes the train split's boxes to
``<artifacts>/labels/cam/train.json``: with ``mal.boxes: cam`` MAL trains from them and labels
them, and with ``segment.train.labels: mal`` ChangeNet-Segmentation trains on those masks. That is
the chain from image labels alone. How good the boxes are is measured against the box around each
train image's true mask *after* labelling (``cam_label.json``): numbers for people, never an input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.data.formats import DatasetLayout
from components.fsutil import write_json

if TYPE_CHECKING:
    from components.config import Params
    from components.models.cam.evaluate import SplitPredictions

CATEGORY = {"id": 1, "name": "defect", "supercategory": "defect"}
"""CAM says *where*, not *which kind*: one category."""


@dataclass(frozen=True)
class CamLabelSummary:
    images: int
    anomalous: int
    boxes: int
    threshold: float


def _scaled(box: tuple[int, int, int, int], scale: float) -> list[float]:
    x1, y1, x2, y2 = (v * scale for v in box)
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def cam_labels_dir(params: Params) -> Path:
    """``<artifacts>/labels/cam``: the ``label_cam`` stage's DVC output."""
    return params.paths.artifacts_dir / "labels" / "cam"


def cam_boxes_path(params: Params) -> Path:
    """``<artifacts>/labels/cam/train.json``: the CAM boxes of the train split (``mal.boxes: cam``)."""
    return cam_labels_dir(params) / "train.json"


def cam_label_metrics_path(params: Params) -> Path:
    return params.metrics_dir / "cam_label.json"


def _called(score: float, threshold: float) -> bool:
    """The image verdict exactly as evaluation calls it: anomalous above the operating threshold."""
    return score > threshold


def _predict_boxes(params: Params, split: str, checkpoint: Path | None) -> tuple[SplitPredictions, float]:
    from components.models.cam.evaluate import dataset_for, operating_threshold, predict_split
    from components.models.cam.metrics import choose_threshold
    from components.models.family import best_checkpoint, get_family

    family = get_family("cam")
    model = family.load_module(Path(checkpoint) if checkpoint else best_checkpoint(params, family)).model
    setting = params.cam.eval
    seen = predict_split(model, dataset_for(params, split), setting, localise=True)
    if setting.threshold == "auto" and setting.threshold_split == split:  # the same scores choose it: one pass
        return seen, choose_threshold(seen.scores, seen.labels, setting.max_false_alarm_rate)
    return seen, operating_threshold(model, params)


def _coco_document(params: Params, split: str, seen: SplitPredictions, threshold: float) -> dict[str, Any]:
    from components.models.cam.evaluate import image_size

    layout = DatasetLayout(params.datasets_dir)
    size = params.data.image_size
    scale = size / image_size(params)  # boxes are in model pixels; COCO in prepared pixels
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, name in enumerate(seen.names):
        image_id = index + 1
        images.append(
            {
                "id": image_id,
                "file_name": layout.segment_image("A", name).relative_to(layout.root).as_posix(),
                "golden_file_name": layout.segment_image("B", name).relative_to(layout.root).as_posix(),
                "width": size,
                "height": size,
            }
        )
        score = float(seen.scores[index])
        if not _called(score, threshold):
            continue
        for box in seen.boxes[index]:
            bbox = _scaled(box, scale)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY["id"],
                    "bbox": bbox,
                    "area": round(bbox[2] * bbox[3], 2),
                    "iscrowd": 0,
                    "score": round(score, 6),
                    "source": "cam",
                }
            )
    return {
        "info": {"description": f"inspectops CAM boxes of {split} (threshold {threshold:.4f})", "version": "1.0"},
        "licenses": [],
        "categories": [CATEGORY],
        "images": images,
        "annotations": annotations,
    }


def _summary(seen: SplitPredictions, threshold: float, document: dict[str, Any]) -> CamLabelSummary:
    return CamLabelSummary(
        images=len(document["images"]),
        anomalous=sum(_called(float(s), threshold) for s in seen.scores),
        boxes=len(document["annotations"]),
        threshold=threshold,
    )


def label_cam(params: Params, split: str, out: Path, checkpoint: Path | None = None) -> CamLabelSummary:
    """Write COCO boxes for the images of ``split`` the CAM classifier calls anomalous."""
    seen, threshold = _predict_boxes(params, split, checkpoint)
    document = _coco_document(params, split, seen, threshold)
    write_json(out, document)
    return _summary(seen, threshold, document)


def box_quality(seen: SplitPredictions, threshold: float) -> dict[str, float]:
    """How good the written boxes are, against the box around each image's true mask.

    ``defect_recall``: share of defective images that got a box; ``good_boxed``: share of good
    images that got one (each becomes a false mask downstream); ``box_iou``: mean over defective
    images of the best box IoU, 0 for an image left without a box; ``hit_0.5``: share of
    defective images whose box has IoU >= 0.5 with the truth.
    """
    called = np.asarray(
        [_called(float(s), threshold) and bool(b) for s, b in zip(seen.scores, seen.boxes, strict=True)]
    )
    defective = np.asarray([box is not None for box in seen.true_boxes], dtype=bool)
    good = ~np.asarray(seen.labels, dtype=bool)
    ious = np.where(called, np.nan_to_num(seen.ious, nan=0.0), 0.0)[defective]
    metrics = {"label/good_boxed": float(called[good].mean()) if good.any() else 0.0}
    if defective.any():
        metrics |= {
            "label/defect_recall": float(called[defective].mean()),
            "label/box_iou": float(ious.mean()),
            "label/hit_0.5": float((ious >= 0.5).mean()),
        }
    return metrics


def label_cam_stage(params: Params, checkpoint: Path | None = None) -> dict[str, float]:
    """The ``label_cam`` stage: CAM boxes of the train split for MAL, and how good they are."""
    from components.fsutil import atomic_dir

    seen, threshold = _predict_boxes(params, "train", checkpoint)
    document = _coco_document(params, "train", seen, threshold)
    with atomic_dir(cam_labels_dir(params)) as staging:
        write_json(staging / cam_boxes_path(params).name, document)
    summary = _summary(seen, threshold, document)
    metrics = {
        "label/images": float(summary.images),
        "label/anomalous": float(summary.anomalous),
        "label/boxes": float(summary.boxes),
        "label/threshold": float(threshold),
        **box_quality(seen, threshold),
    }
    write_json(cam_label_metrics_path(params), metrics)
    return metrics
