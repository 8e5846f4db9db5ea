"""Reading a box-only COCO instances file into a :class:`BoxJob`, checked before any prediction.

Prediction is the expensive part of mask auto-labelling (a large model per image), so
everything that can be known from the JSON and the image files is checked first, and
*all* problems are reported together in one :class:`LabelingError`, each naming the
annotation id(s) and the file.

Box conventions (decided here, used by the writer and the output check alike):

- COCO ``bbox`` is ``[x, y, width, height]`` in continuous pixel coordinates: the
  image spans ``[0, W] x [0, H]`` and pixel ``(col, row)`` covers
  ``[col, col + 1) x [row, row + 1)``.
- A box may overshoot an image edge by up to :data:`EDGE_TOLERANCE_PX` (1 px): tools
  that store inclusive pixel ends (``w = x2 - x1 + 1``) or round normalised
  coordinates land there. Such boxes are clipped to the image before prediction. A box
  further out is an error: it was drawn for another image size.
- A box with ``width <= 0`` or ``height <= 0``, or one that covers no pixel once
  clipped, is an error.
- The pixels of a box (:func:`box_window`) are all pixels the box touches:
  columns ``floor(x1) .. ceil(x2) - 1``, with a 1e-6 px slack so float noise such as
  ``20.0000001`` does not add a column. An integer box ``[10, 5, 4, 3]`` is exactly
  columns 10..13 and rows 5..7.

``segmentation`` is not required (and ignored if present): the point of the labeler is
to produce it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.labeling.errors import LabelingError, problem_report
from components.validation.tables import ImageProber

EDGE_TOLERANCE_PX = 1.0
"""How far (in pixels) a box may reach past an image edge and still be clipped rather than rejected."""
PIXEL_SLACK = 1e-6
"""Float noise ignored when turning box edges into pixel columns and rows."""

IMAGE_KEYS = ("id", "file_name", "height", "width")
ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")


@dataclass(frozen=True)
class ImageBoxes:
    """One image and the box annotations on it, ready for a predictor call."""

    image: Mapping[str, Any]
    """The image record as in the input JSON."""
    path: Path
    annotations: tuple[dict[str, Any], ...]
    """The input annotation records, in input order."""
    boxes_xyxy: np.ndarray
    """``[N, 4]`` float64 ``x1, y1, x2, y2``, clipped to the image; row ``i`` is ``annotations[i]``."""

    @property
    def height(self) -> int:
        return int(self.image["height"])

    @property
    def width(self) -> int:
        return int(self.image["width"])

    @property
    def annotation_ids(self) -> list[int]:
        return [int(a["id"]) for a in self.annotations]


@dataclass(frozen=True)
class BoxJob:
    """A checked COCO file: the whole input document and its annotated images."""

    coco_json: Path
    images_dir: Path
    document: dict[str, Any]
    """The input JSON; the writer copies it and replaces ``annotations``."""
    images: tuple[ImageBoxes, ...]
    """Images with at least one annotation, in the order of the JSON's ``images``. Images
    without annotations stay in :attr:`document` but are never opened."""

    @property
    def num_annotations(self) -> int:
        return sum(len(i.annotations) for i in self.images)


# --------------------------------------------------------------------------- geometry


def clip_box(bbox: list[float], height: int, width: int) -> tuple[float, float, float, float]:
    """``x1, y1, x2, y2`` of a COCO ``[x, y, w, h]`` box, clipped to the ``width x height`` image."""
    x, y, w, h = (float(v) for v in bbox)
    return (
        min(max(x, 0.0), width),
        min(max(y, 0.0), height),
        min(max(x + w, 0.0), width),
        min(max(y + h, 0.0), height),
    )


def box_window(xyxy: tuple[float, float, float, float] | np.ndarray, height: int, width: int) -> tuple[slice, slice]:
    """``(rows, cols)`` slices of the pixels a box touches (see the module docstring), inside the image."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    col0 = max(math.floor(x1 + PIXEL_SLACK), 0)
    row0 = max(math.floor(y1 + PIXEL_SLACK), 0)
    col1 = min(math.ceil(x2 - PIXEL_SLACK), width)
    row1 = min(math.ceil(y2 - PIXEL_SLACK), height)
    return slice(row0, max(row1, row0)), slice(col0, max(col1, col0))


def box_problem(bbox: Any, height: int, width: int) -> str | None:
    """Why ``bbox`` cannot be labelled on a ``width x height`` image, or None when it can."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"bbox must be 4 numbers [x, y, width, height], got {bbox!r}"
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"bbox {bbox} has a non-finite value"
    if w <= 0 or h <= 0:
        return f"bbox {bbox} has zero or negative area"
    tol = EDGE_TOLERANCE_PX + PIXEL_SLACK
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return f"bbox {bbox} lies outside the {width}x{height} image by more than {EDGE_TOLERANCE_PX:g} px"
    rows, cols = box_window(clip_box(bbox, height, width), height, width)
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return f"bbox {bbox} covers no pixel of the {width}x{height} image"
    return None


# --------------------------------------------------------------------------- loading


def load_box_job(coco_json: Path, images_dir: Path, prober: ImageProber | None = None) -> BoxJob:
    """Read ``coco_json`` (``file_name`` relative to ``images_dir``) and check it and its images.

    Raises :class:`LabelingError` listing every problem found; nothing is predicted
    until the whole job is known to be sound. ``prober`` decodes the images (fully, so
    a truncated file is caught); pass one to share its cache.
    """
    coco_json, images_dir = Path(coco_json), Path(images_dir)
    document = _read_json(coco_json)
    problems: list[str] = []
    sections = {key: document.get(key) for key in ("images", "annotations", "categories")}
    for key, value in sections.items():
        if not isinstance(value, list):
            problems.append(f"top-level '{key}' must be a list, got {_kind(value)}")
    if not (isinstance(sections["images"], list) and isinstance(sections["annotations"], list)):
        raise LabelingError(problem_report(str(coco_json), problems))

    images = _image_records(sections["images"], problems)
    category_ids = _category_ids(sections["categories"], problems)
    per_image = _annotations(sections["annotations"], images, category_ids, images_dir, problems)
    tasks = _check_files(images, per_image, images_dir, prober or ImageProber(), problems)
    if problems:
        raise LabelingError(problem_report(f"{coco_json} (images under {images_dir})", problems))
    return BoxJob(coco_json=coco_json, images_dir=images_dir, document=document, images=tasks)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LabelingError(f"{path}: COCO file not found")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabelingError(f"{path}: cannot read as JSON ({error})") from None
    if not isinstance(document, dict):
        raise LabelingError(f"{path}: a COCO file is a JSON object, got {_kind(document)}")
    return document


def _image_records(records: list[Any], problems: list[str]) -> dict[int, dict[str, Any]]:
    """Usable image records by id; the rest become problems."""
    images: dict[int, dict[str, Any]] = {}
    for index, record in enumerate(records):
        where = f"images[{index}]"
        if not isinstance(record, dict):
            problems.append(f"{where}: not an object")
            continue
        missing = [k for k in IMAGE_KEYS if k not in record]
        if missing:
            problems.append(f"{where} (id {record.get('id', '?')}): missing key(s) {', '.join(missing)}")
            continue
        image_id, name = record["id"], record["file_name"]
        if not _is_int(image_id):
            problems.append(f"{where}: id must be an integer, got {image_id!r}")
        elif not (isinstance(name, str) and name and not Path(name).is_absolute()):
            problems.append(f"image {image_id}: file_name must be a path relative to the images folder, got {name!r}")
        elif not all(_is_int(record[k]) and record[k] > 0 for k in ("height", "width")):
            problems.append(f"image {image_id} ({name}): height and width must be positive integers")
        elif image_id in images:
            problems.append(f"image {image_id} ({name}): duplicate image id")
        else:
            images[image_id] = record
    return images


def _category_ids(records: Any, problems: list[str]) -> set[int] | None:
    """Known category ids, or None when ``categories`` is unusable (reported already)."""
    if not isinstance(records, list):
        return None
    ids = {r["id"] for r in records if isinstance(r, dict) and _is_int(r.get("id"))}
    if len(ids) < len(records):
        problems.append("categories: every category needs a unique integer id")
    return ids


def _annotations(
    records: list[Any],
    images: Mapping[int, dict[str, Any]],
    category_ids: set[int] | None,
    images_dir: Path,
    problems: list[str],
) -> dict[int, list[dict[str, Any]]]:
    """Box annotations grouped by image id; bad ones become problems naming the id and file."""
    seen: dict[int, int] = {}
    per_image: dict[int, list[dict[str, Any]]] = {}
    for index, ann in enumerate(records):
        if not isinstance(ann, dict):
            problems.append(f"annotations[{index}]: not an object")
            continue
        ann_id = ann.get("id")
        label = f"annotation {ann_id}" if _is_int(ann_id) else f"annotations[{index}] (id {ann_id!r})"
        image_id = ann.get("image_id")
        image = images.get(image_id) if _is_int(image_id) else None
        if image is not None:
            label += f" ({images_dir / image['file_name']})"
        missing = [k for k in ANNOTATION_KEYS if k not in ann]
        if missing:
            problems.append(f"{label}: missing key(s) {', '.join(missing)}")
            continue
        if not _is_int(ann_id):
            problems.append(f"{label}: id must be an integer")
            continue
        if ann_id in seen:
            problems.append(f"{label}: duplicate annotation id (annotations[{seen[ann_id]}] and [{index}])")
            continue
        seen[ann_id] = index
        if image is None:
            problems.append(f"{label}: image_id {ann['image_id']!r} is not in 'images'")
            continue
        if category_ids is not None and ann["category_id"] not in category_ids:
            problems.append(f"{label}: category_id {ann['category_id']!r} is not in 'categories'")
            continue
        why = box_problem(ann["bbox"], int(image["height"]), int(image["width"]))
        if why is not None:
            problems.append(f"{label}: {why}")
            continue
        per_image.setdefault(image["id"], []).append(ann)
    return per_image


def _check_files(
    images: Mapping[int, dict[str, Any]],
    per_image: Mapping[int, list[dict[str, Any]]],
    images_dir: Path,
    prober: ImageProber,
    problems: list[str],
) -> tuple[ImageBoxes, ...]:
    """Decode every annotated image once (in threads) and compare its size with the JSON's."""
    paths = {image_id: images_dir / images[image_id]["file_name"] for image_id in per_image}
    prober.prefetch(paths.values())
    tasks = []
    for image_id, record in images.items():
        if image_id not in per_image:
            continue
        anns, path = per_image[image_id], paths[image_id]
        label = f"annotation(s) {', '.join(str(a['id']) for a in anns)} on image {image_id} ({path})"
        probe = prober.probe(path)
        height, width = int(record["height"]), int(record["width"])
        if not probe.exists:
            problems.append(f"{label}: image file not found")
        elif not probe.decodable:
            problems.append(f"{label}: image cannot be decoded ({probe.error})")
        elif (probe.height, probe.width) != (height, width):
            problems.append(f"{label}: image is {probe.width}x{probe.height}, the JSON says {width}x{height}")
        else:
            boxes = np.array([clip_box(a["bbox"], height, width) for a in anns], dtype=np.float64).reshape(-1, 4)
            tasks.append(ImageBoxes(image=record, path=path, annotations=tuple(anns), boxes_xyxy=boxes))
    return tuple(tasks)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
