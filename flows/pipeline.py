"""The inspectops pipeline as a Prefect flow, built from the single stage graph.

Wiring only: each task is one call into :mod:`components.pipeline.runner`, tasks pass
the params path (never tensors), and each stage is its own MLflow child run under one
parent run per flow run. A stage's output streams to the terminal as it runs and, line by
line, to the task's logs in Prefect's UI; the flow closes with a summary table (log and
artifact).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from components.config import Params, load_params
from components.pipeline import runner, summary
from components.pipeline.run_lock import pipeline_lock
from components.pipeline.stages import Stage, plan
from components.tracking import run_url, tracking_uri


def _stage_output_logger() -> logging.Logger:
    """Stage output for Prefect's UI only: the terminal already shows it raw, progress bars and all."""
    logger = logging.getLogger("inspectops.stage_output")
    if not logger.handlers:
        logger.addHandler(APILogHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


@task(cache_policy=NO_CACHE)
def run_stage_task(stage_name: str, params_path: str, parent_run_id: str) -> dict[str, float]:
    """One pipeline stage. DVC, not Prefect, decides whether it must rerun (one cache, see README)."""
    return runner.execute_stage(stage_name, params_path, parent_run_id, on_line=_stage_output_logger().info)


@flow(name="inspectops-pipeline", log_prints=True)
def pipeline_flow(params_path: str = "params.yaml", until: str | None = None) -> dict[str, dict[str, float]]:
    """Run the stages that apply to ``params_path`` in graph order (up to ``until``)."""
    params_file = Path(params_path).resolve()
    with contextlib.chdir(runner.project_root(params_file)):
        params = load_params(params_file)
        stages = plan(params, until)
        owner = {"params": str(params_file), "flow_run": f"{flow_run.name} ({flow_run.id})"}
        with (
            pipeline_lock(Path(params.paths.artifacts_dir).resolve(), **owner),  # one run per checkout at a time
            runner.warm_stage_processes(params_file, stages),
        ):
            return _run_pipeline(params_file, params, stages)


def _run_pipeline(params_path: Path, params: Params, stages: list[Stage]) -> dict[str, dict[str, float]]:
    parent_run_id = runner.start_pipeline_run(params)
    results: dict[str, dict[str, float]] = {}
    status = "FAILED"
    current: str | None = None
    try:
        for stage in stages:
            current = stage.name
            configured = run_stage_task.with_options(name=f"stage-{stage.name}", retries=stage.retries)
            results[stage.name] = configured(stage.name, str(params_path), parent_run_id)
            for report in runner.stage_reports(stage, params):
                create_markdown_artifact(
                    key=f"inspectops-{stage.name.replace('_', '-')}", markdown=report, description=stage.description
                )
        current = None
        status = "FINISHED"
    finally:
        flat = {key: value for metrics in results.values() for key, value in metrics.items()}
        runner.end_pipeline_run(params, parent_run_id, status, flat)
        _publish_summary(params, stages, results, current, parent_run_id, status)
    return results


def _publish_summary(
    params: Params,
    stages: list[Stage],
    results: dict[str, dict[str, float]],
    failed_stage: str | None,
    parent_run_id: str,
    status: str,
) -> None:
    """The closing table, in the log (so the terminal shows it) and as a Prefect artifact."""
    logger = get_run_logger()
    try:
        uri = tracking_uri(params)
        from components.tracking import ensure_experiment

        parent_url = run_url(uri, ensure_experiment(params), parent_run_id)
        rows = summary.build_rows(stages, results, params, failed_stage)
        decision = summary.registry_decision(params) if any(n.startswith("register") for n in results) else ""
        logger.info("\n%s", summary.render_text(rows, decision, parent_url, uri))
        create_markdown_artifact(
            key="inspectops-pipeline-summary",
            markdown=summary.render_markdown(rows, decision, parent_url, status.lower()),
            description=f"pipeline {status.lower()}",
        )
    except Exception as error:  # a summary must never hide the run's own outcome
        logger.warning("could not build the pipeline summary: %s", error)


if __name__ == "__main__":
    pipeline_flow()
