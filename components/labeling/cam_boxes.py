"""``inspectops label cam``: image labels in, defect boxes out, as COCO for the mask auto-labeler.

The trained CAM classifier reads every image of a prepared split; each image it calls an
anomaly (anomaly probability at or above the operating threshold, chosen as its evaluation
chooses it) gets the box(es) of its class-activation map, with the probability as ``score``.
Images called good are listed without annotations, so MAL and ChangeNet see the whole split.
``file_name`` is the segmentation A image relative to the datasets root, exactly as prepare's
own COCO files, so ``inspectops label mal --coco OUT --images <datasets>`` takes the result
as it is: image labels -> boxes -> masks, with no hand-drawn region.

The file is written atomically (:func:`components.fsutil.write_json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.formats import DatasetLayout
from components.fsutil import write_json

if TYPE_CHECKING:
    from components.config import Params

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


def label_cam(params: Params, split: str, out: Path, checkpoint: Path | None = None) -> CamLabelSummary:
    """Write COCO boxes for the images of ``split`` the CAM classifier calls anomalous."""
    from components.models.cam.evaluate import dataset_for, image_size, operating_threshold, predict_split
    from components.models.family import best_checkpoint, get_family

    family = get_family("cam")
    model = family.load_module(checkpoint or best_checkpoint(params, family)).model
    threshold = operating_threshold(model, params)
    dataset = dataset_for(params, split)
    seen = predict_split(model, dataset, params.cam.eval, localise=True)
    layout = DatasetLayout(params.datasets_dir)
    size = params.data.image_size
    scale = size / image_size(params)  # boxes are in model pixels; COCO in prepared pixels
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    anomalous = 0
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
        if score < threshold:
            continue
        anomalous += 1
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
    payload = {
        "info": {"description": f"inspectops CAM boxes of {split} (threshold {threshold:.4f})", "version": "1.0"},
        "licenses": [],
        "categories": [CATEGORY],
        "images": images,
        "annotations": annotations,
    }
    write_json(out, payload)
    return CamLabelSummary(images=len(images), anomalous=anomalous, boxes=len(annotations), threshold=threshold)
