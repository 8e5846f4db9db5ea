"""The cross-platform comparison table: measured FPS next to the TAO model card's, per platform.

Pure: it takes each platform's outcome (status, message, measured records) and the
platform registry, and returns rows, a column table (for a Prefect table artifact and
``mlflow.log_table``), Markdown and flat metrics. A failed platform is a row too, with
its reason, so a missing number is never mistaken for a slow one. A measured row names what
produced its number: ``runtime`` is the record's variant (``pytorch cuda fp16 channels-last
compile``, ``onnxruntime CPU EP int8-cpu``, ``tensorrt fp16``) and ``device`` the device's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from components.benchmarking.platforms import Platform

OK = "ok"
FAILED = "failed"


@dataclass(frozen=True)
class PlatformOutcome:
    """What one platform's child run gave: a final status, why (if not ok) and its measurements."""

    platform: str
    status: str
    """``ok``, ``failed``, ``timed out``, ``crashed``, ``cancelled``, ... (lower case)."""
    message: str = ""
    results: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    """Records with at least ``batch_size`` and ``pairs_per_second``; ``variant``, ``precision`` and
    ``device`` when known (see :func:`components.benchmarking.bench.measure`)."""
    flow_run_id: str | None = None


_FINAL_STATUS = {"COMPLETED": OK, "FAILED": FAILED, "CRASHED": "crashed", "CANCELLED": "cancelled"}


def outcome_status(state_type: str | None) -> str:
    """A child flow run's final state type (``COMPLETED``, ``FAILED``, ...) as a table status.

    Any non-final state (``SCHEDULED``, ``PENDING``, ``RUNNING``, ...) means ``run_deployment``
    gave up waiting: ``timed out``.
    """
    if state_type is None:
        return "missing"
    return _FINAL_STATUS.get(state_type.upper(), "timed out")


def timeout_message(state_name: str, timeout_seconds: float, work_pool: str) -> str:
    """Why a platform has no numbers when its child run never finished."""
    if state_name.upper() in ("SCHEDULED", "LATE", "PENDING"):
        return (
            f"not started within {timeout_seconds:g} s (state {state_name}): is a worker polling work pool "
            f"'{work_pool}' (or is the deployment served)?"
        )
    return f"did not finish within {timeout_seconds:g} s (state {state_name})"


def outcome_from_flow_run(platform: str, flow_run: Any, timeout_seconds: float, work_pool: str) -> PlatformOutcome:
    """Read a child flow run returned by ``run_deployment`` (which does not raise when the child failed)."""
    state = getattr(flow_run, "state", None)
    state_type = getattr(getattr(state, "type", None), "value", None)
    status = outcome_status(state_type)
    message = ""
    if status == "timed out":
        message = timeout_message(getattr(state, "name", "?"), timeout_seconds, work_pool)
    elif status != OK:
        message = getattr(state, "message", None) or f"child run ended {getattr(state, 'name', status)}"
    return PlatformOutcome(platform, status, message, (), str(getattr(flow_run, "id", "")) or None)


@dataclass(frozen=True)
class ComparisonRow:
    platform: str
    display_name: str
    runtime: str
    """What ran: the measured variant's label, else (no measurement) the platform's runtime."""
    precision: str
    batch_size: int | None
    measured_fps: float | None
    reference_fps: float | None
    ratio: float | None
    """measured / reference, only at the reference batch size."""
    status: str
    message: str = ""
    device: str = ""
    """The measured device's name (``NVIDIA H200``); empty when nothing was measured."""


def platform_rows(platform: Platform, outcome: PlatformOutcome) -> list[ComparisonRow]:
    """Rows for one platform: one per measured batch size, or one row saying why there are none."""
    reference = platform.reference
    base = {
        "platform": platform.name,
        "display_name": platform.display_name,
        "runtime": platform.runtime,
        "precision": platform.precision,
    }
    measured = sorted(outcome.results, key=lambda record: int(record["batch_size"]))
    if outcome.status != OK or not measured:
        status = outcome.status if outcome.status != OK else FAILED
        message = outcome.message or ("no measurements recorded" if outcome.status == OK else "")
        return [
            ComparisonRow(
                **base,
                batch_size=reference.batch_size if reference else None,
                measured_fps=None,
                reference_fps=reference.fps if reference else None,
                ratio=None,
                status=status,
                message=message,
            )
        ]
    rows = []
    for record in measured:
        batch = int(record["batch_size"])
        fps = float(record["pairs_per_second"])
        at_reference = reference is not None and batch == reference.batch_size
        # What was actually measured (e.g. the INT8 model on a CPU), not the platform's default.
        what = {
            "runtime": str(record.get("variant") or platform.runtime),
            "precision": str(record.get("precision") or platform.precision),
            "device": str(record.get("device") or ""),
        }
        rows.append(
            ComparisonRow(
                **{**base, **what},
                batch_size=batch,
                measured_fps=fps,
                reference_fps=reference.fps if at_reference else None,
                ratio=fps / reference.fps if at_reference else None,
                status=OK,
                message=outcome.message,
            )
        )
    if reference is not None and all(int(r["batch_size"]) != reference.batch_size for r in measured):
        rows.append(
            ComparisonRow(
                **base,
                batch_size=reference.batch_size,
                measured_fps=None,
                reference_fps=reference.fps,
                ratio=None,
                status=OK,
                message=f"reference batch {reference.batch_size} not measured (add it to benchmark.batch_sizes)",
            )
        )
    return rows


def build_rows(platforms: Sequence[Platform], outcomes: Mapping[str, PlatformOutcome]) -> list[ComparisonRow]:
    """All rows in the platforms' order; a platform with no outcome is reported as ``missing``."""
    rows: list[ComparisonRow] = []
    for platform in platforms:
        outcome = outcomes.get(platform.name) or PlatformOutcome(platform.name, "missing", "no child run result")
        rows.extend(platform_rows(platform, outcome))
    return rows


def rows_to_table(rows: Sequence[ComparisonRow]) -> dict[str, list[Any]]:
    """Column-oriented table (same keys as :class:`ComparisonRow`), for artifacts and ``mlflow.log_table``."""
    columns = list(ComparisonRow.__dataclass_fields__)
    table: dict[str, list[Any]] = {name: [] for name in columns}
    for row in rows:
        for name, value in asdict(row).items():
            table[name].append(value)
    return table


def _fmt(value: float | int | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def rows_to_markdown(rows: Sequence[ComparisonRow], title: str = "Benchmark comparison", note: str = "") -> str:
    """A Markdown table a person reads in the Prefect UI or as an MLflow artifact."""
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    lines += [
        "| platform | device | runtime | precision | batch | measured FPS | reference FPS | ratio | status | note |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        message = row.message.replace("|", "\\|").replace("\n", " ")
        if len(message) > 300:
            message = message[:297] + "..."
        lines.append(
            f"| {row.display_name} | {row.device or '–'} | {row.runtime} | {row.precision} | {_fmt(row.batch_size, 'd')} "
            f"| {_fmt(row.measured_fps, '.2f')} | {_fmt(row.reference_fps, '.2f')} | {_fmt(row.ratio, '.2f')} "
            f"| {row.status} | {message} |"
        )
    return "\n".join(lines) + "\n"


def comparison_metrics(rows: Sequence[ComparisonRow]) -> dict[str, float]:
    """Flat MLflow metrics: ``compare/<platform>/b<N>/pairs_per_second``, ``.../ratio``, and counts."""
    metrics: dict[str, float] = {}
    failed: set[str] = set()
    platforms: set[str] = set()
    for row in rows:
        platforms.add(row.platform)
        if row.status != OK:
            failed.add(row.platform)
            continue
        if row.measured_fps is not None and row.batch_size is not None:
            metrics[f"compare/{row.platform}/b{row.batch_size}/pairs_per_second"] = row.measured_fps
        if row.ratio is not None:
            metrics[f"compare/{row.platform}/ratio_to_reference"] = row.ratio
    metrics["compare/platforms"] = float(len(platforms))
    metrics["compare/platforms_failed"] = float(len(failed))
    return metrics
