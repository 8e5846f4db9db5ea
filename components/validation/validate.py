"""``validate_datasets``: run the expectation suites over the prepared datasets.

Flow: our code turns every dataset file into a table (:mod:`.tables`), an ephemeral
Great Expectations context validates each table against its suite (:mod:`.suites`),
and the results become

- Data Docs (HTML) under ``<artifacts>/reports/validation/data_docs``, for browsing (not a
  DVC output: GX stamps them with run times);
- ``<artifacts>/validation/summary.json``, for machines (no timestamps, so DVC only
  sees a change when the findings change);
- a :class:`ValidationReport` whose ``failures`` name the dataset file, the
  expectation and the failing CSV rows / list lines or files, for people.

A missing or unparseable dataset file is a failure that names the file, not a
traceback. Nothing under the datasets folder is written.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.core import ExpectationValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context import EphemeralDataContext
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from components.config import Params
from components.data.formats import SPLITS, DatasetLayout
from components.fsutil import atomic_dir, write_json
from components.validation.suites import (
    CLASSIFY_CSV_SUITE,
    CLASSIFY_FILES_SUITE,
    SEGMENT_LIST_SUITE,
    classify_csv_suite,
    classify_files_suite,
    segment_list_suite,
)
from components.validation.tables import (
    DatasetFileError,
    ImageProber,
    classify_files_table,
    known_defect_kinds,
    missing_locating_columns,
    read_classify_csv,
    read_segment_entries,
    segment_table,
)

REQUIRED_SPLITS = ("train", "val")
"""Splits that must exist; ``test`` is validated only when prepare wrote it."""
DOCS_SITE = "inspectops"
RUN_NAME = "inspectops-data-validate"
MAX_LISTED = 10
"""Failing rows quoted per failure line; the summary keeps twice as many."""

UNITS = {
    "row": "row = 1-based CSV data row, header not counted; line = line in the file",
    "line": "line = 1-based line number in the list file",
    "record": "record = 1-based row of the source check (one per part, one per box); the text names the file and line",
}


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation applied to one dataset file."""

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    success: bool
    unexpected_count: int = 0
    failing: tuple[str, ...] = ()
    error: str | None = None
    skipped: bool = False  # its column is absent; the header check reports that once

    def to_json(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "column": self.column,
            "kwargs": self.kwargs,
            "success": self.success,
            "unexpected_count": self.unexpected_count,
            "first_failures": list(self.failing[: 2 * MAX_LISTED]),
            "error": self.error,
            "skipped_column_missing": self.skipped,
        }


@dataclass(frozen=True)
class DatasetOutcome:
    """One suite applied to one dataset file (a GX validation definition)."""

    name: str
    suite: str
    dataset_file: Path
    unit: str
    success: bool
    expectations: tuple[ExpectationOutcome, ...] = ()
    error: str | None = None  # the file could not be read: nothing was validated
    note: str | None = None  # why the suite did not run although that is no failure by itself

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "suite": self.suite,
            "dataset_file": str(self.dataset_file),
            "index": UNITS[self.unit],
            "success": self.success,
            "error": self.error,
            "note": self.note,
            "expectations": [e.to_json() for e in self.expectations],
        }


@dataclass(frozen=True)
class ValidationReport:
    """What ``inspectops data validate`` prints and exits on."""

    outcomes: tuple[DatasetOutcome, ...]
    failures: list[str]
    summary_path: Path
    data_docs_index: Path

    @property
    def success(self) -> bool:
        return not self.failures


@dataclass
class _Check:
    """A table ready for GX, or the reason there is none."""

    name: str
    suite: gx.ExpectationSuite
    dataset_file: Path
    unit: str
    frame: pd.DataFrame | None = None
    lines: Mapping[int, int] | None = None  # CSV: data row -> file line
    error: str | None = None
    note: str | None = None


# --------------------------------------------------------------------------- public API


def validate_datasets(params: Params) -> ValidationReport:
    """Validate every prepared dataset file; write Data Docs and ``summary.json``; never raise on bad data."""
    layout = DatasetLayout(params.datasets_dir)
    out_dir = params.paths.artifacts_dir / "validation"
    # Data Docs carry run times and ids: they sit among the reports, outside the DVC output,
    # whose summary.json changes only when the findings do.
    docs_dir = params.reports_dir / "validation" / "data_docs"
    with _quiet_gx(), atomic_dir(docs_dir) as docs_staging:
        checks = plan_checks(params, layout, ImageProber())
        context = _gx_context(docs_staging)
        outcomes = tuple(_run_check(context, check) for check in checks)
        context.build_data_docs(site_names=[DOCS_SITE])
    failures = [line for outcome in outcomes for line in failure_lines(outcome)]
    report = ValidationReport(outcomes, failures, out_dir / "summary.json", docs_dir / "index.html")
    write_json(report.summary_path, summary_payload(report, layout))
    return report


def format_failures(report: ValidationReport) -> str:
    """Text for the CLI: one block per failure (stderr), or a one-line pass message."""
    where = f"Data Docs: {report.data_docs_index}\nSummary: {report.summary_path}"
    if report.success:
        return f"Data validation passed: {len(report.outcomes)} dataset checks.\n{where}"
    lines = [f"Data validation failed: {len(report.failures)} problem(s)."]
    lines += [f"  - {failure}" for failure in report.failures]
    return "\n".join([*lines, where])


# --------------------------------------------------------------------------- planning


def plan_checks(params: Params, layout: DatasetLayout, prober: ImageProber) -> list[_Check]:
    """Every (dataset file, suite) pair to run, with its table built by our own code."""
    size = params.data.image_size
    label_suite = classify_csv_suite(known_defect_kinds(params.raw_category_dir) or _manifest_classes(layout))
    files_suite = classify_files_suite(size)
    segment_size = None if params.data.tiling is not None else size  # tiling: native sizes, each pair alike
    segment_suite = segment_list_suite(segment_size)
    from components.data.prepare import prepared_datasets

    written = prepared_datasets(layout.root)
    checks: list[_Check] = []
    if "classify" in written:
        for split in _splits(layout.classify_csv):
            checks += _classify_checks(params, layout, split, prober, label_suite, files_suite)
    if "segment" in written:
        checks += _segment_checks(layout, segment_size, prober, segment_suite)
    return checks


def _manifest_classes(layout: DatasetLayout) -> tuple[str, ...] | None:
    """Defect classes prepare recorded for a non-MVTec source (``None`` for older trees)."""
    import json

    path = layout.root / "manifest.json"
    if not path.is_file():
        return None
    classes = json.loads(path.read_text()).get("classes")
    return tuple(classes) if classes is not None else None


def _splits(path_of: Callable[[str], Path]) -> list[str]:
    """Required splits always (a missing one is a failure), ``test`` when its file exists."""
    return [s for s in SPLITS if s in REQUIRED_SPLITS or path_of(s).is_file()]


def _classify_checks(
    params: Params,
    layout: DatasetLayout,
    split: str,
    prober: ImageProber,
    label_suite: gx.ExpectationSuite,
    files_suite: gx.ExpectationSuite,
) -> list[_Check]:
    path = layout.classify_csv(split)
    csv_check = _Check(f"classify_{split}_csv", label_suite, path, "row")
    try:
        table = read_classify_csv(path)
    except DatasetFileError as error:
        csv_check.error = str(error)
        return [csv_check]
    csv_check.frame, csv_check.lines = table.frame, table.lines
    files_check = _Check(f"classify_{split}_files", files_suite, path, "row", lines=table.lines)
    lacking = missing_locating_columns(csv_check.frame)
    if lacking:
        files_check.note = f"images not checked: the CSV lacks column(s) {', '.join(lacking)}"
        return [csv_check, files_check]
    files_check.frame = classify_files_table(
        csv_check.frame,
        layout.classify_images,
        params.data.lighting_conditions,
        params.data.num_golden,
        params.data.image_size,
        prober,
    )
    return [csv_check, files_check]


def _segment_checks(
    layout: DatasetLayout, size: int | None, prober: ImageProber, suite: gx.ExpectationSuite
) -> list[_Check]:
    """Read every list first: disjointness needs all splits before any table is built."""
    entries: dict[str, pd.DataFrame | DatasetFileError] = {}
    for split in _splits(layout.segment_list):
        try:
            entries[split] = read_segment_entries(layout.segment_list(split))
        except DatasetFileError as error:
            entries[split] = error
    members = {s: set(frame["name"]) for s, frame in entries.items() if isinstance(frame, pd.DataFrame)}
    checks = []
    for split, frame in entries.items():
        path = layout.segment_list(split)
        check = _Check(f"segment_{split}_list", suite, path, "line")
        if isinstance(frame, DatasetFileError):
            check.error = str(frame)
        else:
            others = {layout.segment_list(s).name: names for s, names in members.items() if s != split}
            check.frame = segment_table(frame, layout, size, prober, others)
        checks.append(check)
    return checks


# --------------------------------------------------------------------------- running GX


@contextmanager
def _quiet_gx() -> Iterator[None]:
    """Silence GX's INFO/WARNING chatter and library warnings for the duration of a run."""
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _gx_context(docs_dir: Path) -> EphemeralDataContext:
    """An in-memory context (nothing of GX's own is left on disk) with one file-system Data Docs site."""
    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        # GX refuses a relative base_directory in a context without a root directory.
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
        data_docs_sites={DOCS_SITE: site},
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.data_sources.add_pandas(DOCS_SITE)
    return context


def _registered_suite(context: EphemeralDataContext, suite: gx.ExpectationSuite) -> gx.ExpectationSuite:
    """Add a suite once; later splits reuse it (GX refuses a second suite of the same name)."""
    if suite.name not in {s.name for s in context.suites.all()}:
        return context.suites.add(suite)
    return context.suites.get(suite.name)


def _run_check(context: EphemeralDataContext, check: _Check) -> DatasetOutcome:
    base = {"name": check.name, "suite": check.suite.name, "dataset_file": check.dataset_file, "unit": check.unit}
    if check.frame is None:
        return DatasetOutcome(**base, success=check.error is None, error=check.error, note=check.note)
    asset = context.data_sources.get(DOCS_SITE).add_dataframe_asset(check.name)
    definition = gx.ValidationDefinition(
        name=check.name,
        data=asset.add_batch_definition_whole_dataframe(check.name),
        suite=_registered_suite(context, check.suite),
    )
    result = context.validation_definitions.add(definition).run(
        batch_parameters={"dataframe": check.frame},
        result_format={"result_format": "COMPLETE"},
        run_id=RunIdentifier(run_name=RUN_NAME),
    )
    present = set(check.frame.columns)
    outcomes = tuple(_expectation_outcome(r, check, present) for r in result.results)
    return DatasetOutcome(**base, success=all(o.success or o.skipped for o in outcomes), expectations=outcomes)


def _expectation_outcome(result: ExpectationValidationResult, check: _Check, present: set[str]) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    column = kwargs.get("column")
    error = _exception_message(result.exception_info)
    base = {"expectation": config.type, "column": column, "kwargs": kwargs, "success": bool(result.success)}
    if error is not None:
        return ExpectationOutcome(**base, error=error, skipped=column is not None and column not in present)
    details = result.result or {}
    frame = check.frame if check.frame is not None else pd.DataFrame()
    index = sorted(_index_value(item, frame.index.name) for item in details.get("unexpected_index_list") or [])
    failing = tuple(_describe_row(frame, i, column, config.meta or {}, check.lines) for i in index)
    if not failing and not result.success:
        failing = (_describe_table_failure(config.type, kwargs, details),)
    return ExpectationOutcome(**base, unexpected_count=int(details.get("unexpected_count") or 0), failing=failing)


def _index_value(item: Any, index_name: str | None) -> int:
    """GX gives a bare index value, or ``{column: value, <index name>: value}`` for a named index."""
    return int(item[index_name] if isinstance(item, Mapping) else item)


def _exception_message(info: Mapping[str, Any] | None) -> str | None:
    """GX nests exception info per metric when a metric fails; flatten it to one message."""
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    messages = sorted({m for m in (_exception_message(v) for v in info.values() if isinstance(v, Mapping)) if m})
    return "; ".join(messages) or None


# --------------------------------------------------------------------------- wording


def _describe_row(
    frame: pd.DataFrame, index: int, column: str | None, meta: Mapping[str, Any], lines: Mapping[int, int] | None
) -> str:
    """``row 3 (line 4): missing a.png; b.png`` (files from the detail column) or ``line 3: 'value'``."""
    unit = f"{frame.index.name or 'row'} {index}"
    if lines and index in lines:
        unit += f" (line {lines[index]})"
    detail = meta.get("detail_column")
    if detail and detail in frame.columns and frame.at[index, detail]:
        verb = meta.get("detail_verb")
        return f"{unit}: {verb + ' ' if verb else ''}{frame.at[index, detail]}"
    value = frame.at[index, column] if column in frame.columns else None
    return f"{unit}: {'empty' if value is None else repr(value)}"


def _describe_table_failure(kind: str, kwargs: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    observed = details.get("observed_value")
    if kind == "expect_table_columns_to_match_ordered_list":
        return _describe_columns(list(observed or []), list(kwargs.get("column_list") or []))
    if kind == "expect_table_row_count_to_be_between":
        return f"{observed} rows, at least {kwargs.get('min_value')} expected"
    return f"observed {observed!r}"


def _describe_columns(found: Sequence[str], expected: Sequence[str]) -> str:
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    parts = [f"missing column(s): {', '.join(missing)}"] if missing else []
    parts += [f"unexpected column(s): {', '.join(extra)}"] if extra else []
    if not parts:
        parts = ["columns are in the wrong order"]
    return f"header is {list(found)}, expected {list(expected)} ({'; '.join(parts)})"


def failure_lines(outcome: DatasetOutcome) -> list[str]:
    """Human-readable failures of one dataset check: file, expectation, rows/lines or files."""
    if outcome.error is not None:
        return [outcome.error]
    return [_failure_line(outcome, e) for e in outcome.expectations if not e.success and not e.skipped]


def _failure_line(outcome: DatasetOutcome, e: ExpectationOutcome) -> str:
    name = f"{e.expectation}({e.column})" if e.column else e.expectation
    head = f"{outcome.dataset_file}: {name} [suite {outcome.suite}]"
    if e.error is not None:
        return f"{head} could not be evaluated: {e.error}"
    if not e.unexpected_count:
        return f"{head} failed: {'; '.join(e.failing)}"
    listed = " | ".join(e.failing[:MAX_LISTED])
    more = f" | ... and {len(e.failing) - MAX_LISTED} more" if len(e.failing) > MAX_LISTED else ""
    plural = "s" if e.unexpected_count != 1 else ""
    return f"{head} failed on {e.unexpected_count} {outcome.unit}{plural} ({UNITS[outcome.unit]}): {listed}{more}"


def summary_payload(report: ValidationReport, layout: DatasetLayout) -> dict[str, Any]:
    """``summary.json``: per suite and per dataset file, each expectation's outcome."""
    suites: dict[str, bool] = {}
    for outcome in report.outcomes:
        suites[outcome.suite] = suites.get(outcome.suite, True) and outcome.success
    return {
        "success": report.success,
        "suites": {name: {"success": ok} for name, ok in suites.items()},
        "validations": [o.to_json() for o in report.outcomes],
        "failures": report.failures,
    }


__all__ = [
    "CLASSIFY_CSV_SUITE",
    "CLASSIFY_FILES_SUITE",
    "SEGMENT_LIST_SUITE",
    "DatasetOutcome",
    "ExpectationOutcome",
    "ValidationReport",
    "format_failures",
    "validate_datasets",
]


class DataValidationError(RuntimeError):
    """The prepared datasets failed validation; the message lists every failure (see :func:`format_failures`)."""
