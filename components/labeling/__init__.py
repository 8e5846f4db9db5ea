"""Mask Auto-Labeler (MAL): COCO box annotations in, COCO instance masks out.

- :func:`~components.labeling.coco_boxes.load_box_job` reads and checks a box-only COCO
  file and its images *before* any prediction, reporting every problem at once;
- :func:`~components.labeling.writer.label_coco` runs a box-prompted mask predictor
  (passed in, not built here) and writes the COCO file with RLE masks atomically;
- :func:`~components.labeling.checks.validate_labels` checks a written file with Great
  Expectations.

Great Expectations and pycocotools take a while to import, so the names are resolved
lazily on first use (as in :mod:`components.validation`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.labeling.checks import LabelCheckResult, validate_labels
    from components.labeling.coco_boxes import BoxJob, ImageBoxes, load_box_job
    from components.labeling.errors import LabelingError
    from components.labeling.rle import annotation_mask, decode_rle, encode_mask
    from components.labeling.writer import LabelSummary, Predictor, label_coco

_HOMES = {
    "LabelCheckResult": "checks",
    "validate_labels": "checks",
    "BoxJob": "coco_boxes",
    "ImageBoxes": "coco_boxes",
    "load_box_job": "coco_boxes",
    "LabelingError": "errors",
    "annotation_mask": "rle",
    "decode_rle": "rle",
    "encode_mask": "rle",
    "LabelSummary": "writer",
    "Predictor": "writer",
    "label_coco": "writer",
}

__all__ = [
    "BoxJob",
    "ImageBoxes",
    "LabelCheckResult",
    "LabelSummary",
    "LabelingError",
    "Predictor",
    "annotation_mask",
    "decode_rle",
    "encode_mask",
    "label_coco",
    "load_box_job",
    "validate_labels",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"components.labeling.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
