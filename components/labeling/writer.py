"""``label_coco``: run a box-prompted mask predictor over a :class:`BoxJob` and write COCO masks.

The predictor is passed in (any callable with the :data:`Predictor` shape), so this
module knows nothing of models and its tests need none.

Each output annotation is the input one (extra keys kept) with

- ``segmentation``: compressed RLE of the predicted mask, cleared outside its box
  (``mask &= box``, pixels as in :func:`~components.labeling.coco_boxes.box_window`):
  a box prompt means "the object is in here", so a pixel outside is a leak into a
  neighbouring object or the background, and keeping it would make the mask and its
  box disagree;
- ``area``: the number of mask pixels. TAO's auto-labeler writes the *box* area here,
  which COCO evaluation uses to bin objects into small/medium/large, so the bins come
  out wrong;
- ``iscrowd``: 0, ``score``: the predictor's score, ``source``: ``"mal"``.

Nothing is written until every image is done, and then atomically
(:func:`components.fsutil.write_json`): a predictor failure mid-way leaves no output
file, or the previous one untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from components.fsutil import write_json
from components.imageio import ImageReadError, read_image
from components.labeling.coco_boxes import BoxJob, ImageBoxes, box_window
from components.labeling.errors import LabelingError
from components.labeling.rle import encode_mask

Predictor = Callable[[np.ndarray, np.ndarray], tuple[list[np.ndarray], list[float]]]
"""``predict(image HxWx3 uint8, boxes_xyxy [N, 4] float) -> (N full-size HxW bool masks, N scores)``."""

SOURCE = "mal"


@dataclass(frozen=True)
class LabelSummary:
    """What one labelling run did."""

    out_path: Path
    images: int
    """Images the predictor ran on (those with at least one box)."""
    annotations: int
    empty_masks: int
    """Annotations whose mask has no pixel inside its box: worth a human look."""
    mean_score: float | None
    """None when there were no annotations."""
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "out_path": str(self.out_path),
            "images": self.images,
            "annotations": self.annotations,
            "empty_masks": self.empty_masks,
            "mean_score": self.mean_score,
            "seconds": round(self.seconds, 3),
        }


def label_coco(job: BoxJob, predict: Predictor, out_path: Path, progress: bool = True) -> LabelSummary:
    """Predict a mask for every box of ``job`` and write the COCO file with masks to ``out_path``.

    Raises :class:`LabelingError` when the predictor breaks its contract (wrong count,
    mask size or score); any exception leaves ``out_path`` as it was.
    """
    start = time.perf_counter()
    labelled: dict[int, dict[str, Any]] = {}
    scores: list[float] = []
    empty = 0
    with tqdm(total=len(job.images), desc="mask auto-label", unit="image", disable=not progress) as bar:
        for task in job.images:
            for annotation, mask_pixels in _label_image(task, predict):
                labelled[annotation["id"]] = annotation
                scores.append(annotation["score"])
                if mask_pixels == 0:
                    empty += 1
            bar.update()
    document = dict(job.document)
    # Input order, not per-image order: a diff against the box file then lines up.
    document["annotations"] = [labelled[a["id"]] for a in job.document["annotations"]]
    write_json(out_path, document)
    return LabelSummary(
        out_path=Path(out_path),
        images=len(job.images),
        annotations=len(labelled),
        empty_masks=int(empty),
        mean_score=float(np.mean(scores)) if scores else None,
        seconds=time.perf_counter() - start,
    )


def _label_image(task: ImageBoxes, predict: Predictor) -> list[tuple[dict[str, Any], int]]:
    """The output annotations of one image, each with its mask pixel count."""
    ids = ", ".join(str(i) for i in task.annotation_ids)
    try:
        image = read_image(task.path)
    except ImageReadError as error:  # it was fine when the job was loaded
        raise LabelingError(f"annotation(s) {ids}: {error}") from None
    masks, scores = predict(image, task.boxes_xyxy.copy())
    where = f"{task.path}: predictor"
    count = len(task.annotations)
    if len(masks) != count or len(scores) != count:
        raise LabelingError(f"{where} returned {len(masks)} masks and {len(scores)} scores for {count} boxes")
    out = []
    for annotation, box, mask, score in zip(task.annotations, task.boxes_xyxy, masks, scores, strict=True):
        about = f"{where}, annotation {annotation['id']}"
        clipped = _clip_to_box(np.asarray(mask), box, task.height, task.width, about)
        out.append((_annotation(annotation, clipped, _score(score, about)), int(clipped.sum())))
    return out


def _clip_to_box(mask: np.ndarray, box: np.ndarray, height: int, width: int, where: str) -> np.ndarray:
    """A new boolean mask: ``mask`` inside the box's pixels, False elsewhere."""
    if mask.shape != (height, width):
        raise LabelingError(f"{where}: mask shape {mask.shape}, the image is {height}x{width}")
    window = box_window(box, height, width)
    clipped = np.zeros((height, width), dtype=bool)
    clipped[window] = mask[window].astype(bool, copy=False)
    return clipped


def _score(score: Any, where: str) -> float:
    """A predictor score as a float in [0, 1]; anything else is a predictor bug, not a label."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise LabelingError(f"{where}: score {score!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise LabelingError(f"{where}: score {value} is not in [0, 1]")
    return value


def _annotation(source: dict[str, Any], mask: np.ndarray, score: float) -> dict[str, Any]:
    """The input annotation, old ``segmentation`` and ``area`` replaced, MAL's keys added."""
    annotation = {k: v for k, v in source.items() if k not in ("segmentation", "area")}
    annotation.update(
        iscrowd=0,
        segmentation=encode_mask(mask),
        area=int(mask.sum()),
        score=score,
        source=SOURCE,
    )
    return annotation
