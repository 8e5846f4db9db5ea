"""``validate_labels``: a Great Expectations check of a COCO file written by the labeler.

As in :mod:`components.validation`, GX cannot open masks or images, so our code turns
the file into a table first, one row per annotation (:func:`label_table`), and a GX
suite (:func:`label_suite`) checks its columns:

- the RLE decodes, and its size is the image file's size (a mask of another size
  trains on shifted or garbage pixels);
- no mask pixel lies outside its box (the writer clears them; one here means the file
  was edited or written by something else);
- ``area`` is the mask's pixel count (TAO writes the box area);
- ``score`` is in [0, 1]; ``ann_id`` is present and unique; the image is known and
  readable, the box usable.

Failures name the annotation ids (:attr:`LabelCheckResult.failures`);
:meth:`LabelCheckResult.raise_for_failures` turns them into a :class:`LabelingError`.
The GX context is ephemeral and has no Data Docs site: nothing is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.core import ExpectationValidationResult
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations import Expectation

from components.imageio import ImageReadError, image_size
from components.labeling.coco_boxes import box_problem, box_window, clip_box
from components.labeling.errors import MAX_LISTED, LabelingError, problem_report
from components.labeling.rle import decode_rle
from components.validation.validate import _exception_message, _quiet_gx

SUITE = "mal_labels"
ASSET = "mal_labels"
FLAG_COLUMNS = ("image_known", "image_readable", "rle_decodable", "bbox_valid")
"""Boolean "this part of the row is fine" columns; each must be True."""
SIZE_PAIRS = (("rle_height", "image_height"), ("rle_width", "image_width"))


@dataclass(frozen=True)
class LabelCheckFailure:
    """One failed expectation and the annotations it failed on."""

    expectation: str
    columns: tuple[str, ...]
    ann_ids: tuple[Any, ...]
    rows: tuple[str, ...]
    """``annotation 5 (images/a.png): rle_height=32, image_height=64``, one per failing row."""
    error: str | None = None

    def __str__(self) -> str:
        name = f"{self.expectation}({', '.join(self.columns)})"
        if self.error is not None:
            return f"{name} could not be evaluated: {self.error}"
        listed = " | ".join(self.rows[:MAX_LISTED])
        more = f" | ... and {len(self.rows) - MAX_LISTED} more" if len(self.rows) > MAX_LISTED else ""
        return f"{name} failed on {len(self.rows)} annotation(s): {listed}{more}"


@dataclass(frozen=True)
class LabelCheckResult:
    """The outcome of :func:`validate_labels`."""

    out_path: Path
    annotations: int
    failures: tuple[LabelCheckFailure, ...]
    table: pd.DataFrame = field(repr=False, compare=False)
    """The checked table, one row per annotation, for a closer look."""

    @property
    def success(self) -> bool:
        return not self.failures

    @property
    def failing_ann_ids(self) -> list[Any]:
        """Annotation ids of every failing row, sorted, each once (None for rows without an id)."""
        ids = {i for f in self.failures for i in f.ann_ids}
        return [*sorted(i for i in ids if i is not None), *([None] if None in ids else [])]

    def raise_for_failures(self) -> None:
        if self.failures:
            head = f"{self.out_path}: label check failed for annotation(s) {_join(self.failing_ann_ids)}"
            raise LabelingError(problem_report(head, [str(f) for f in self.failures]))


def validate_labels(out_path: Path, images_dir: Path) -> LabelCheckResult:
    """Check a labelled COCO file against its images (``file_name`` relative to ``images_dir``).

    A file that cannot be read as COCO raises :class:`LabelingError` at once; failed
    expectations are returned in the result (call ``raise_for_failures()`` to raise).
    """
    out_path = Path(out_path)
    document = _read_document(out_path)
    table = label_table(document, Path(images_dir))
    with _quiet_gx():
        results = _run_suite(table)
    failures = tuple(f for f in (_failure(r, table) for r in results) if f is not None)
    return LabelCheckResult(out_path=out_path, annotations=len(table), failures=failures, table=table)


# --------------------------------------------------------------------------- the table


def label_table(document: Mapping[str, Any], images_dir: Path) -> pd.DataFrame:
    """One row per annotation of ``document``: what its mask, box and image look like."""
    images = {r["id"]: r for r in document.get("images") or [] if _usable_image(r)}
    sizes: dict[Path, tuple[int, int] | None] = {}
    rows = [_row(ann, images, images_dir, sizes) for ann in document.get("annotations") or []]
    columns = [
        "ann_id", "image_id", "file", *FLAG_COLUMNS, "image_height", "image_width", "rle_height", "rle_width",
        "mask_area", "area", "outside_box_pixels", "score",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _row(
    ann: Any, images: Mapping[Any, dict[str, Any]], images_dir: Path, sizes: dict[Path, tuple[int, int] | None]
) -> dict[str, Any]:
    ann = ann if isinstance(ann, dict) else {}
    image_id = ann.get("image_id")
    image = images.get(image_id) if _is_int(image_id) else None
    path = images_dir / image["file_name"] if image is not None else None
    if path is not None and path not in sizes:
        try:
            width, height = image_size(path)
            sizes[path] = (height, width)
        except ImageReadError:
            sizes[path] = None
    image_hw = sizes.get(path) if path is not None else None
    row: dict[str, Any] = {
        "ann_id": ann.get("id") if _is_int(ann.get("id")) else None,
        "image_id": image_id if _is_int(image_id) else None,
        "file": str(path) if path is not None else None,
        "image_known": image is not None,
        "image_readable": image_hw is not None,
        "image_height": image_hw[0] if image_hw else None,
        "image_width": image_hw[1] if image_hw else None,
        "rle_decodable": False,
        "rle_height": None,
        "rle_width": None,
        "mask_area": None,
        "area": ann.get("area") if _is_number(ann.get("area")) else None,
        "outside_box_pixels": None,
        "score": float(ann["score"]) if _is_number(ann.get("score")) else None,
    }
    segmentation = ann.get("segmentation")
    try:
        mask = decode_rle(segmentation) if isinstance(segmentation, Mapping) else None
    except LabelingError:
        mask = None
    bbox = ann.get("bbox")
    row["bbox_valid"] = image is not None and box_problem(bbox, int(image["height"]), int(image["width"])) is None
    if mask is not None:
        height, width = mask.shape
        row.update(rle_decodable=True, rle_height=height, rle_width=width, mask_area=int(mask.sum()))
        if box_problem(bbox, height, width) is None:
            inside = int(mask[box_window(clip_box(bbox, height, width), height, width)].sum())
            row["outside_box_pixels"] = row["mask_area"] - inside
    return row


# --------------------------------------------------------------------------- the suite


def label_suite() -> gx.ExpectationSuite:
    """The expectations every MAL output file meets; ``notes`` say why (shown in Data Docs)."""
    expectations: list[Expectation] = [
        gx.expectations.ExpectColumnValuesToNotBeNull(column=c, notes="Every annotation needs it.")
        for c in ("ann_id", "image_id", "area", "score")
    ]
    expectations.append(
        gx.expectations.ExpectColumnValuesToBeUnique(
            column="ann_id", notes="COCO tools index annotations by id; a repeat silently hides one."
        )
    )
    expectations += [
        gx.expectations.ExpectColumnValuesToBeInSet(
            column=c, value_set=[True], notes="Image present and known, mask decodable, box usable."
        )
        for c in FLAG_COLUMNS
    ]
    expectations += [
        gx.expectations.ExpectColumnPairValuesToBeEqual(
            column_A=mask_axis,
            column_B=image_axis,
            ignore_row_if="either_value_is_missing",  # an unreadable mask or image fails its flag column
            notes="A mask of another size does not line up with its image.",
        )
        for mask_axis, image_axis in SIZE_PAIRS
    ]
    expectations += [
        gx.expectations.ExpectColumnPairValuesToBeEqual(
            column_A="area",
            column_B="mask_area",
            ignore_row_if="either_value_is_missing",
            notes="COCO evaluation bins objects by area; the box area (TAO's) puts them in the wrong bins.",
        ),
        gx.expectations.ExpectColumnValuesToBeBetween(
            column="outside_box_pixels",
            min_value=0,
            max_value=0,
            notes="A box prompt bounds its object; the labeler clears mask pixels outside the box.",
        ),
        gx.expectations.ExpectColumnValuesToBeBetween(
            column="score", min_value=0, max_value=1, notes="Scores are probabilities; reviewers sort by them."
        ),
    ]
    # The constructor, not add_expectation: a new suite can only be added to within a context.
    return gx.ExpectationSuite(name=SUITE, expectations=expectations)


def _run_suite(table: pd.DataFrame) -> list[ExpectationValidationResult]:
    """Validate ``table`` in a fresh in-memory context (no stores or Data Docs on disk)."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas(ASSET).add_dataframe_asset(ASSET)
    definition = gx.ValidationDefinition(
        name=ASSET,
        data=asset.add_batch_definition_whole_dataframe(ASSET),
        suite=context.suites.add(label_suite()),
    )
    result = context.validation_definitions.add(definition).run(
        batch_parameters={"dataframe": table}, result_format={"result_format": "COMPLETE"}
    )
    return list(result.results)


def _failure(result: ExpectationValidationResult, table: pd.DataFrame) -> LabelCheckFailure | None:
    config = result.expectation_config
    kwargs = config.kwargs
    columns = tuple(kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs)
    error = _exception_message(result.exception_info)
    if result.success and error is None:
        return None
    if error is not None:
        return LabelCheckFailure(config.type, columns, (), (), error=error)
    index = sorted(int(i) for i in (result.result or {}).get("unexpected_index_list") or [])
    ann_ids = tuple(table.at[i, "ann_id"] for i in index)
    rows = tuple(_describe(table, i, columns) for i in index)
    if not rows:
        rows = (f"observed {(result.result or {}).get('observed_value')!r}",)
    return LabelCheckFailure(config.type, columns, ann_ids, rows)


def _describe(table: pd.DataFrame, index: int, columns: tuple[str, ...]) -> str:
    ann_id = table.at[index, "ann_id"]
    who = f"annotation {ann_id}" if ann_id is not None else f"annotations[{index}] (no id)"
    values = ", ".join(f"{c}={_plain(table.at[index, c])}" for c in columns)
    return f"{who} ({table.at[index, 'file'] or 'unknown image'}): {values}"


# --------------------------------------------------------------------------- helpers


def _read_document(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LabelingError(f"{path}: labelled COCO file not found")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabelingError(f"{path}: cannot read as JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list):
        raise LabelingError(f"{path}: not a COCO file (no 'annotations' list)")
    return document


def _plain(value: Any) -> str:
    """``64`` rather than ``64.0`` for the whole numbers pandas stores as float beside a None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def _join(values: list[Any]) -> str:
    return ", ".join("(no id)" if v is None else str(v) for v in values)


def _usable_image(record: Any) -> bool:
    """An image record with the keys the table needs, of the right types."""
    return (
        isinstance(record, dict)
        and _is_int(record.get("id"))
        and isinstance(record.get("file_name"), str)
        and all(_is_int(record.get(k)) and record[k] > 0 for k in ("height", "width"))
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
