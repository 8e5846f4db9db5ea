"""The closing summary of a pipeline run: what ran, what DVC found cached, what it gave.

One row per stage (cached or ran, seconds, its key numbers, the MLflow run behind its
outputs) and the registry's decision, rendered twice from the same rows: as plain text
for the terminal and the worker's log, and as Markdown for the Prefect artifact.
"""

from __future__ import annotations

import fnmatch
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.config import FAMILIES, Params
from components.pipeline.stages import STAGES, Stage

RAN, CACHED, FAILED, NOT_RUN = "ran", "cached", "failed", "not run"
NOT_APPLICABLE = "not applicable"
"""A model family none of whose stages applies to the params (its reason in the key-metrics column)."""


@dataclass(frozen=True)
class SummaryRow:
    stage: str
    status: str
    seconds: float | None
    key_metrics: str
    run_id: str
    """The MLflow run that produced the stage's current outputs ('' if none is known)."""
    run_url: str
    """Its link in the MLflow UI ('' with no run)."""
    run_is_earlier: bool = False
    """True when the stage was cached: the run linked is the earlier one that made its outputs."""


def key_metric_text(stage: Stage, metrics: Mapping[str, float]) -> str:
    """``name value`` for each of the stage's key metrics present in ``metrics``."""
    shown = []
    for pattern in stage.key_metrics:
        for key in sorted(k for k in metrics if fnmatch.fnmatchcase(k, pattern)):
            shown.append(f"{key} {_number(metrics[key])}")
    return ", ".join(shown)


def _number(value: float) -> str:
    if value != value:  # nan
        return "nan"
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def build_rows(
    stages: Sequence[Stage],
    results: Mapping[str, Mapping[str, float]],
    params: Params,
    failed_stage: str | None = None,
) -> list[SummaryRow]:
    """Rows for every planned stage, from the flow's results and each stage's run record."""
    from components.pipeline.runner import read_run_record
    from components.tracking import run_url

    rows = []
    for stage in stages:
        metrics = dict(results.get(stage.name, {}))
        record = read_run_record(params, stage.name)
        if stage.name in results:
            cached = metrics.get(f"{stage.name}/cached", 0.0) == 1.0
            status = CACHED if cached else RAN
        else:
            cached = False
            status = FAILED if stage.name == failed_stage else NOT_RUN
        # A cached stage's numbers come from its metrics files; the record fills in the rest
        # (e.g. the registry version, which no metrics file holds).
        for key, value in record.get("metrics", {}).items():
            metrics.setdefault(key, value)
        shown = record if status in (RAN, CACHED) else {}
        url = run_url(shown["tracking_uri"], shown["experiment_id"], shown["run_id"]) if shown else ""
        rows.append(
            SummaryRow(
                stage=stage.name,
                status=status,
                seconds=metrics.get(f"{stage.name}/wall_seconds"),
                key_metrics=key_metric_text(stage, metrics) if status in (RAN, CACHED) else "",
                run_id=shown.get("run_id", ""),
                run_url=url,
                run_is_earlier=cached,
            )
        )
    return rows + not_applicable_rows(params)


def not_applicable_rows(params: Params) -> list[SummaryRow]:
    """One row per model family that does not run on these params, with the reason (e.g. the data has no masks)."""
    rows = []
    for family in FAMILIES:
        reasons = [stage.skip_reason(params) for stage in STAGES if stage.model_family == family]
        if reasons and all(reasons):
            rows.append(SummaryRow(family, NOT_APPLICABLE, None, str(reasons[0]), "", ""))
    return rows


def registry_decision(params: Params) -> str:
    """One line per family on the registry gate's last decision ('' when no register stage ran here)."""
    from components.models.family import FAMILY_MODULES
    from components.registry import decision_path

    lines = []
    for family in FAMILY_MODULES:
        path = decision_path(params, family)
        if not path.is_file():
            continue
        record: dict[str, Any] = json.loads(path.read_text())
        verdict = "promoted to champion" if record["decision"]["promote"] else "not promoted"
        lines.append(f"{record['model']} v{record['version']}: {verdict} ({record['decision']['reason']})")
    return "\n".join(lines)


def render_text(rows: Sequence[SummaryRow], decision: str, parent_url: str, tracking: str = "") -> str:
    """The summary as a plain-text table (rich, 120 columns), for the terminal and Prefect's logs.

    Runs appear by short id; the parent run's link leads to all of them (its children).
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(title="inspectops pipeline", title_justify="left")
    for column in ("stage", "status", "seconds", "key metrics", "MLflow run"):
        table.add_column(column, overflow="fold", no_wrap=column != "key metrics")
    for row in rows:
        seconds = "" if row.seconds is None else f"{row.seconds:.0f}"
        run_id = row.run_id[:8]
        table.add_row(
            row.stage,
            row.status,
            seconds,
            row.key_metrics,
            run_id + (" (earlier)" if row.run_is_earlier and run_id else ""),
        )
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, no_color=True, force_terminal=False)
    console.print(table)
    if decision:
        console.print(f"Registry: {decision}", soft_wrap=True)
    console.print(f"MLflow pipeline run (stage runs are its children): {parent_url}", soft_wrap=True)
    if tracking.startswith("sqlite:"):
        console.print(f"  open the UI first: mlflow ui --backend-store-uri {tracking}", soft_wrap=True)
    return buffer.getvalue()


def render_markdown(rows: Sequence[SummaryRow], decision: str, parent_url: str, status: str) -> str:
    """The summary as Markdown, for the Prefect artifact."""
    lines = [
        f"# inspectops pipeline: {status}",
        "",
        f"MLflow pipeline run: [{parent_url}]({parent_url})",
        "",
        "| stage | status | seconds | key metrics | MLflow run |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        seconds = "" if row.seconds is None else f"{row.seconds:.0f}"
        link = f"[{'earlier run' if row.run_is_earlier else 'run'}]({row.run_url})" if row.run_url else ""
        lines.append(f"| {row.stage} | {row.status} | {seconds} | {row.key_metrics} | {link} |")
    if decision:
        lines += ["", "**Registry:** " + decision.replace("\n", "  \n")]  # one line per family
    return "\n".join(lines) + "\n"
