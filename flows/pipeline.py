"""The inspectops pipeline as a Prefect flow, built from the single stage graph.

Wiring only: each task is one call into :mod:`components.pipeline.runner`, tasks pass
the params path (never tensors), and each stage is its own MLflow child run under one
parent run per flow run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from components.config import load_params
from components.pipeline import runner
from components.pipeline.stages import plan
from components.tracking import tracking_uri


@task(cache_policy=NO_CACHE)
def run_stage_task(stage_name: str, params_path: str, parent_run_id: str) -> dict[str, float]:
    """One pipeline stage. DVC, not Prefect, decides whether it must rerun (one cache, see README)."""
    return runner.execute_stage(stage_name, params_path, parent_run_id)


@flow(name="inspectops-pipeline", log_prints=True)
def pipeline_flow(params_path: str = "params.yaml", until: str | None = None) -> dict[str, dict[str, float]]:
    """Run the stages that apply to ``params_path`` in graph order (up to ``until``)."""
    params_file = Path(params_path).resolve()
    with contextlib.chdir(runner.project_root(params_file)):
        return _run_pipeline(params_file, until)


def _run_pipeline(params_path: Path, until: str | None) -> dict[str, dict[str, float]]:
    params = load_params(params_path)
    parent_run_id = runner.start_pipeline_run(params)
    results: dict[str, dict[str, float]] = {}
    status = "FAILED"
    try:
        for stage in plan(params, until):
            configured = run_stage_task.with_options(name=f"stage-{stage.name}", retries=stage.retries)
            results[stage.name] = configured(stage.name, str(params_path), parent_run_id)
            for report in runner.stage_reports(stage, params):
                create_markdown_artifact(key=f"inspectops-{stage.name}", markdown=report, description=stage.description)
        status = "FINISHED"
    finally:
        flat = {key: value for metrics in results.values() for key, value in metrics.items()}
        runner.end_pipeline_run(params, parent_run_id, status, flat)
        create_markdown_artifact(
            key="inspectops-pipeline-summary",
            markdown=runner.summary_markdown(results, parent_run_id, tracking_uri(params)),
            description=f"pipeline {status.lower()}",
        )
    return results


if __name__ == "__main__":
    pipeline_flow()
