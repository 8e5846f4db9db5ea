"""Expectation suites for the prepared datasets (Great Expectations 1.x).

Three suites, each run once per split file:

- ``classify_csv``: the CSV as written: exact header, no empty cells, allowed labels,
  one row per object;
- ``classify_files``: the table from :func:`~components.validation.tables.classify_files_table`:
  every lighting condition of the input and golden(s) present, decodable and square;
- ``segment_list``: the table from :func:`~components.validation.tables.segment_table`:
  every entry in A, B and label, decodable, square, binary masks, no duplicates, no
  entry shared with another split.

Each expectation carries ``notes`` (why it matters, shown in Data Docs) and, where a
derived table explains a failure, ``meta["detail_column"]``: the column naming the
offending files, which the report quotes next to the failing row.
"""

from __future__ import annotations

from collections.abc import Sequence

import great_expectations as gx
from great_expectations.expectations import Expectation

from components.data.formats import CLASSIFY_COLUMNS, PASS_LABEL, SEGMENT_KINDS

CLASSIFY_CSV_SUITE = "classify_csv"
CLASSIFY_FILES_SUITE = "classify_files"
SEGMENT_LIST_SUITE = "segment_list"

LABEL_PATTERN = rf"^(?:{PASS_LABEL}|[a-z][a-z0-9_]*)$"
"""``PASS`` or a lowercase identifier naming a defect kind."""


def _detail(column: str, verb: str) -> dict[str, str]:
    """``meta`` telling the report which column names the files behind a failing row."""
    return {"detail_column": column, "detail_verb": verb}


def _must_be(column: str, value: object, notes: str, detail: dict[str, str] | None = None) -> Expectation:
    """Every (non-null) value of ``column`` equals ``value``: our boolean "this row is fine" flags."""
    return gx.expectations.ExpectColumnValuesToBeInSet(column=column, value_set=[value], notes=notes, meta=detail)


def _not_empty(what: str) -> Expectation:
    return gx.expectations.ExpectTableRowCountToBeBetween(
        min_value=1, notes=f"A split without {what} trains or evaluates nothing and hides a broken prepare run."
    )


def _square(size: int, detail_column: str) -> list[Expectation]:
    note = f"Models are built for {size}x{size} inputs (params data.image_size); prepare resizes every image."
    meta = _detail(detail_column, f"not {size}x{size}:")
    return [
        gx.expectations.ExpectColumnValuesToBeInSet(column=axis, value_set=[size], notes=note, meta=meta)
        for axis in ("image_width", "image_height")
    ]


def _decodable() -> Expectation:
    return _must_be(
        "image_decodable",
        True,
        "A truncated or corrupt PNG crashes the data loader mid-epoch.",
        _detail("undecodable_files", "cannot decode"),
    )


def _suite(name: str, expectations: list[Expectation]) -> gx.ExpectationSuite:
    """Build through the constructor: ``add_expectation`` on a new suite needs an active GX context."""
    return gx.ExpectationSuite(name=name, expectations=expectations)


def classify_csv_suite(defect_kinds: Sequence[str] | None) -> gx.ExpectationSuite:
    """Header, content and label checks of a TAO Optical Inspection CSV.

    ``defect_kinds``: the raw category's defect kinds when known; labels must then be
    ``PASS`` or one of them. Labels are always checked for shape as well, so a typo is
    caught even when the raw data is not at hand.
    """
    expectations: list[Expectation] = [
        _not_empty("rows"),
        gx.expectations.ExpectTableColumnsToMatchOrderedList(
            column_list=list(CLASSIFY_COLUMNS),
            notes="TAO's Optical Inspection loader reads these columns by name and in this order.",
        ),
    ]
    expectations += [
        gx.expectations.ExpectColumnValuesToNotBeNull(column=c, notes="An empty cell cannot name an image or a class.")
        for c in CLASSIFY_COLUMNS
    ]
    expectations.append(
        gx.expectations.ExpectColumnValuesToMatchRegex(
            column="label", regex=LABEL_PATTERN, notes=f"Labels are {PASS_LABEL} or a lowercase defect-kind identifier."
        )
    )
    if defect_kinds is not None:
        expectations.append(
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="label",
                value_set=[PASS_LABEL, *defect_kinds],
                notes="Defect kinds come from the raw category's ground_truth folders.",
            )
        )
    expectations.append(
        gx.expectations.ExpectColumnValuesToBeUnique(
            column="object_name",
            notes="Image files are named after object_name, so a repeat reuses another row's images.",
        )
    )
    return _suite(CLASSIFY_CSV_SUITE, expectations)


def classify_files_suite(size: int) -> gx.ExpectationSuite:
    """Every image a CSV row points at exists, decodes and has the expected size."""
    return _suite(
        CLASSIFY_FILES_SUITE,
        [
            _must_be(
                "input_files_present",
                True,
                "Each row needs its input image under every lighting condition (params data.lighting_conditions).",
                _detail("missing_input_files", "missing"),
            ),
            _must_be(
                "golden_files_present",
                True,
                "Each row needs its golden image(s) under every lighting condition (params data.num_golden).",
                _detail("missing_golden_files", "missing"),
            ),
            _decodable(),
            *_square(size, "wrong_size_files"),
        ],
    )


def _same_size(detail_column: str) -> list[Expectation]:
    """Native-size segmentation (``data.tiling``): any size, but A, B and label of a pair alike."""
    return [
        gx.expectations.ExpectColumnValuesToBeInSet(
            column=detail_column,
            value_set=[""],
            notes="With data.tiling a pair keeps its own size; its test, golden and mask must share it.",
            meta=_detail(detail_column, "not the size of the pair's test image:"),
        )
    ]


def segment_list_suite(size: int | None) -> gx.ExpectationSuite:
    """Every list entry has its A/B/label triple, decodable, square (``size``; ``None``: of one size), with a 0/255 mask."""
    presence = [
        _must_be(
            f"in_{kind}",
            True,
            f"TAO Visual ChangeNet loads <name>.png from {kind}/ for every list entry.",
            _detail("missing_files", "missing"),
        )
        for kind in SEGMENT_KINDS
    ]
    return _suite(
        SEGMENT_LIST_SUITE,
        [
            _not_empty("entries"),
            gx.expectations.ExpectColumnValuesToBeUnique(
                column="name", notes="A repeated entry silently weights one sample twice."
            ),
            *presence,
            _decodable(),
            *(_square(size, "wrong_size_files") if size is not None else _same_size("wrong_size_files")),
            _must_be(
                "mask_binary",
                True,
                "Change masks are 0 (no change) or 255 (change); other values are resampling or format damage.",
                _detail("non_binary_mask", "values other than 0 and 255 in"),
            ),
            _must_be(
                "in_other_split",
                False,
                "A sample in two splits leaks training data into validation or test metrics.",
                _detail("other_splits", "also listed in"),
            ),
        ],
    )
