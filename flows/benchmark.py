"""Benchmark fan-out as Prefect flows: one child deployment per platform, one parent comparing them.

Wiring only: each task calls one function in :mod:`components.benchmarking`.

* ``benchmark-platform`` (deployment ``benchmark-platform/<platform>``, bound to the
  platform's work pool): resolve the model, build the engine on TensorRT platforms,
  time it, log an MLflow run tagged with the parent's ``fanout_id``.
* ``benchmark-fanout``: ``run_deployment`` for every selected platform at once (threads),
  read each child's *final state* (``run_deployment`` does not raise when a child fails),
  then build the comparison table from the children's MLflow runs and publish it as Prefect
  table and Markdown artifacts and as an MLflow run. A failed platform is a table row with
  its reason; it does not stop the others.

``python -m flows.benchmark serve --platforms cpu t4`` serves the per-platform deployments
from this machine (tests, demos); ``python -m flows.benchmark register`` registers them
against their work pools for real workers.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment

from components.benchmarking import bench
from components.benchmarking.compare import PlatformOutcome, outcome_from_flow_run
from components.benchmarking.deployments import (
    deployment_name,
    platform_deployment_specs,
    register_deployments,
    runner_deployments,
)
from components.benchmarking.platforms import load_platforms
from components.config import load_params

COMPARISON_ARTIFACT_KEY = "benchmark-comparison"
COMPARISON_MARKDOWN_KEY = "benchmark-comparison-summary"


@task(cache_policy=NO_CACHE)
def benchmark_platform_task(
    params_path: str, platform: str, model_uri: str, model_version: str | None, fanout_id: str | None
) -> dict[str, Any]:
    """Benchmark on the machine this runs on; raises (so the child fails) when the platform cannot run."""
    tags = {"fanout_id": fanout_id} if fanout_id else None
    return bench.benchmark_platform(load_params(params_path), platform, model_uri, model_version, extra_tags=tags)


@flow(name="benchmark-platform", log_prints=True)
def benchmark_platform_flow(
    params_path: str = "params.yaml",
    platform: str = "cpu",
    model_uri: str = "",
    model_version: str | None = None,
    fanout_id: str | None = None,
) -> dict[str, Any]:
    """Benchmark ``model_uri`` (``models:/name/version``, ``models:/name@alias``, ``runs:/...``, a path; empty: champion) here."""
    return benchmark_platform_task(params_path, platform, model_uri, model_version, fanout_id)


@task(cache_policy=NO_CACHE)
def run_platform_task(
    platform: str, work_pool: str, parameters: dict[str, Any], timeout_seconds: float, poll_interval_seconds: float
) -> PlatformOutcome:
    """Start ``benchmark-platform/<platform>`` and wait; never raises, the outcome says what happened."""
    try:
        child = run_deployment(
            deployment_name(platform),
            parameters=parameters,
            timeout=timeout_seconds,
            poll_interval=poll_interval_seconds,
        )
    except Exception as error:  # e.g. the deployment was never registered
        return PlatformOutcome(platform, "failed", f"could not start {deployment_name(platform)}: {error}")
    return outcome_from_flow_run(platform, child, timeout_seconds, work_pool)


@task(cache_policy=NO_CACHE)
def compare_task(
    params_path: str,
    platforms: list[str],
    outcomes: dict[str, PlatformOutcome],
    fanout_id: str,
    model_uri: str,
    model_version: str | None,
) -> bench.FanoutReport:
    return bench.compare_fanout(load_params(params_path), platforms, outcomes, fanout_id, model_uri, model_version)


@flow(name="benchmark-fanout", log_prints=True)
def benchmark_fanout_flow(
    params_path: str = "params.yaml",
    platforms: list[str] | None = None,
    model_uri: str = "",
    model_version: str | None = None,
    timeout_seconds: float = 7200.0,
    poll_interval_seconds: float = 5.0,
) -> dict[str, Any]:
    """Benchmark one model on every platform (default: ``benchmark.platforms``) and compare with TAO's numbers.

    ``model_uri`` defaults to the registry's champion; ``timeout_seconds`` bounds the wait per
    platform (a platform whose work pool has no worker is reported "timed out").
    """
    from prefect.runtime import flow_run

    params = load_params(params_path)
    selected = load_platforms().select(list(platforms or params.benchmark.platforms))
    model_uri = model_uri or bench.default_model_uri(params)
    fanout_id = str(flow_run.get_id() or "local")
    futures = [
        run_platform_task.with_options(name=f"run-{platform.name}").submit(
            platform.name,
            platform.work_pool,
            {
                "params_path": params_path,
                "platform": platform.name,
                "model_uri": model_uri,
                "model_version": model_version,
                "fanout_id": fanout_id,
            },
            timeout_seconds,
            poll_interval_seconds,
        )
        for platform in selected
    ]
    outcomes = {outcome.platform: outcome for outcome in (future.result() for future in futures)}
    names = [platform.name for platform in selected]
    report = compare_task(params_path, names, outcomes, fanout_id, model_uri, model_version)
    create_table_artifact(
        key=COMPARISON_ARTIFACT_KEY,
        table=report.table,
        description=f"measured vs TAO reference FPS; failed: {report.failed or 'none'}",
    )
    create_markdown_artifact(key=COMPARISON_MARKDOWN_KEY, markdown=report.markdown, description="benchmark comparison")
    for name in report.failed:
        print(f"platform {name} failed: {outcomes[name].message if name in outcomes else 'no outcome'}")
    return {
        "fanout_id": fanout_id,
        "mlflow_run_id": report.mlflow_run_id,
        "failed": report.failed,
        "rows": [asdict(row) for row in report.rows],
    }


def main(argv: list[str] | None = None) -> None:
    """``serve`` the per-platform deployments here, or ``register`` them against their work pools."""
    parser = argparse.ArgumentParser(prog="python -m flows.benchmark", description=main.__doc__)
    parser.add_argument("command", choices=["serve", "register"])
    parser.add_argument("--platforms", nargs="*", default=None, help="platform names (default: all)")
    parser.add_argument("--params-path", default="params.yaml", help="params file as the runner machine sees it")
    parser.add_argument("--limit", type=int, default=None, help="serve: max concurrent runs")
    args = parser.parse_args(argv)
    # Deploy the flow imported under its module name: run as __main__, its entrypoint would be unimportable.
    module = importlib.import_module("flows.benchmark")
    specs = platform_deployment_specs(load_platforms(), args.platforms, args.params_path)
    if args.command == "register":
        for name, deployment_id in register_deployments(module.benchmark_platform_flow, specs).items():
            print(f"registered {name} ({deployment_id})")
        return
    from prefect import serve

    serve(*runner_deployments(module.benchmark_platform_flow, specs, with_work_pools=False), limit=args.limit)


if __name__ == "__main__":
    main()
