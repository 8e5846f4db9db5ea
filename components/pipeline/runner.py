"""Run one stage as a child MLflow run of a pipeline run: the body of every Prefect task."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from components.config import Params, load_params
from components.pipeline.stages import Stage, get_stage, resolve_path

PARENT_RUN_ENV = "INSPECTOPS_PARENT_RUN_ID"
"""Carries the pipeline's MLflow run id into stage commands that DVC starts as subprocesses."""


class StageError(RuntimeError):
    """A stage failed; the message starts with the stage name so the flow's failure says where."""


def run_stage(name: str, params: Params | Path | str, parent_run_id: str | None = None) -> dict[str, float]:
    """Run stage ``name`` inside its own MLflow run (a child of ``parent_run_id`` when given).

    The CLI (and so ``dvc repro`` / ``dvc exp run``) and the Prefect tasks both come here,
    so every stage run lands in MLflow however it was started.
    """
    import mlflow

    from components.tracking import ensure_experiment, is_rank_zero, log_metrics, run_tags, tree_hash

    if not isinstance(params, Params):
        params = load_params(params)
    parent_run_id = parent_run_id or os.environ.get(PARENT_RUN_ENV) or None
    stage = get_stage(name)
    if not is_rank_zero():  # another DDP rank: do the work, leave the tracking to rank 0
        return stage.function()(params)
    experiment_id = ensure_experiment(params)
    tags = {**run_tags(params), "stage": name}
    with mlflow.start_run(
        run_name=name,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        nested=parent_run_id is not None,
        tags=tags,
    ):
        mlflow.log_params(stage_params(stage.params, params))
        started = time.perf_counter()
        try:
            metrics = stage.function()(params)
        except Exception as error:
            mlflow.set_tag("failure", f"{type(error).__name__}: {error}"[:5000])
            raise StageError(f"stage '{name}' failed: {error}") from error
        metrics = {**metrics, f"{name}/seconds": time.perf_counter() - started}
        log_metrics(metrics)
        mlflow.set_tag("data_hash", tree_hash(params.raw_category_dir))  # synth may have just made it
    return metrics


def uses_dvc(params_path: Path | str) -> bool:
    """DVC decides what to recompute when the flow runs the repository's own ``params.yaml``.

    ``dvc.yaml`` names ``params.yaml`` in every stage command, so any other params file
    (tests, ad-hoc runs) runs the stages directly instead.
    """
    path = Path(params_path)
    return (
        path.name == "params.yaml"
        and (path.resolve().parent / "dvc.yaml").is_file()
        and (path.resolve().parent / ".dvc").is_dir()
    )


def project_root(params_path: Path | str) -> Path:
    """The directory a pipeline run works in, so relative paths in params mean one place.

    Under DVC that is the repository holding ``params.yaml`` (DVC runs every stage command
    there); the flow works there too, wherever the worker started it, so that the metrics it
    reads back, the reports it publishes and the SQLite tracking store are the stages' own.
    Any other params file keeps the caller's working directory.
    """
    return Path(params_path).resolve().parent if uses_dvc(params_path) else Path.cwd()


def stage_metrics(stage: Stage, params: Params) -> dict[str, float]:
    """The metrics a stage last wrote, read back from its metrics files."""
    metrics: dict[str, float] = {}
    for template in stage.metrics:
        path = resolve_path(template, params)
        if path.is_file():
            data = json.loads(path.read_text())
            metrics.update({k: float(v) for k, v in data.items() if isinstance(v, int | float)})
    return metrics


def reproduce_stage(name: str, params_path: Path | str, parent_run_id: str | None = None) -> dict[str, float]:
    """``dvc repro --single-item <stage>``: runs the stage only if its deps, params or outs changed.

    This is the pipeline's one caching mechanism: DVC's lock file and cache, shared by
    ``dvc repro`` and the Prefect flow. A skipped stage reports ``<stage>/cached = 1``.
    """
    path = Path(params_path).resolve()
    params = load_params(path)
    stage = get_stage(name)
    env = {**os.environ}
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    done = subprocess.run(
        ["dvc", "repro", "--single-item", name], cwd=path.parent, env=env, capture_output=True, text=True
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(line for line in output.splitlines()[-25:] if line.strip())
        raise StageError(f"stage '{name}' failed (dvc repro exit {done.returncode}):\n{tail}")
    cached = f"Running stage '{name}'" not in output
    return {**stage_metrics(stage, params), f"{name}/cached": float(cached)}


def execute_stage(name: str, params_path: Path | str, parent_run_id: str | None = None) -> dict[str, float]:
    """The body of a pipeline task: through DVC for the repository's params, directly otherwise."""
    if uses_dvc(params_path):
        return reproduce_stage(name, params_path, parent_run_id)
    return run_stage(name, params_path, parent_run_id)


def stage_reports(stage: Stage, params: Params) -> list[str]:
    """The Markdown reports a stage wrote (e.g. the benchmark comparison table), for Prefect artifacts."""
    paths = (resolve_path(template, params) for template in stage.reports)
    return [path.read_text() for path in paths if path.is_file()]


def stage_params(keys: tuple[str, ...], params: Params) -> dict[str, str]:
    """The params a stage declares (DVC's ``params:``), flattened to ``section.key`` names."""
    from components.tracking import flatten

    flat = flatten(params.model_dump(mode="json"))
    return {k: str(v)[:6000] for k, v in flat.items() if any(k == key or k.startswith(key + ".") for key in keys)}


def start_pipeline_run(params: Params, run_name: str = "pipeline") -> str:
    """Open the parent MLflow run of a pipeline run and return its id (closed by :func:`end_pipeline_run`)."""
    import mlflow

    from components.tracking import ensure_experiment, flatten, run_tags

    experiment_id = ensure_experiment(params)
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=run_name, tags={**run_tags(params), "kind": "pipeline"})
    flat = flatten(params.model_dump(mode="json"))
    for key, value in flat.items():
        client.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


def end_pipeline_run(params: Params, run_id: str, status: str, metrics: dict[str, float]) -> None:
    import mlflow

    from components.tracking import tracking_uri, tree_hash

    mlflow.set_tracking_uri(tracking_uri(params))
    client = mlflow.MlflowClient()
    # The raw data may only exist now (synth ran inside this pipeline run).
    client.set_tag(run_id, "data_hash", tree_hash(params.raw_category_dir))
    stamp = int(time.time() * 1000)
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value), timestamp=stamp)
    client.set_terminated(run_id, status=status)


def summary_markdown(results: dict[str, dict[str, float]], run_id: str, tracking: str) -> str:
    """A table of every stage's metrics, for the Prefect artifact a person looks at."""
    lines = [
        "# inspectops pipeline",
        "",
        f"MLflow parent run `{run_id}` (tracking URI `{tracking}`).",
        "",
        "| stage | metric | value |",
        "|---|---|---|",
    ]
    for stage, metrics in results.items():
        for key, value in sorted(metrics.items()):
            lines.append(f"| {stage} | {key} | {value:.4g} |")
    return "\n".join(lines) + "\n"
