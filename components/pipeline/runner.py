"""Run one stage as a child MLflow run of a pipeline run: the body of every Prefect task."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from components.config import Params, load_params
from components.fsutil import write_json
from components.pipeline.stages import Stage, get_stage, resolve_path

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Cursor moves and colours: meant for a terminal, noise in a log line."""

LineSink = Callable[[str], None]
"""Receives each finished line a stage prints (progress-bar redraws collapsed to their last state)."""

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

    from components.tracking import ensure_experiment, is_rank_zero, log_metrics, run_tags, tracking_uri, tree_hash
    from components.tracking_outage import as_unreachable, is_unreachable, stop_retrying

    if not isinstance(params, Params):
        params = load_params(params)
    parent_run_id = parent_run_id or os.environ.get(PARENT_RUN_ENV) or None
    stage = get_stage(name)
    if stage.datasets and (reason := stage.skip_reason(params)) is not None:
        raise StageError(f"stage '{name}' cannot run: {reason} (see components/data/sources)")
    if not is_rank_zero():  # another DDP rank: do the work, leave the tracking to rank 0
        return stage.function()(params)
    try:
        experiment_id = ensure_experiment(params)
        tags = {**run_tags(params), "stage": name}
        with mlflow.start_run(
            run_name=name,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            nested=parent_run_id is not None,
            tags=tags,
        ) as run:
            mlflow.log_params(stage_params(stage.params, params))
            started = time.perf_counter()
            try:
                metrics = stage.function()(params)
            except Exception as error:
                if is_unreachable(error):
                    stop_retrying()  # closing the run below must not wait out the window again
                    raise
                mlflow.set_tag("failure", f"{type(error).__name__}: {error}"[:5000])
                raise StageError(f"stage '{name}' failed: {error}") from error
            seconds = time.perf_counter() - started
            metrics = {**metrics, f"{name}/seconds": seconds}
            log_metrics(metrics)
            mlflow.set_tag("data_hash", tree_hash(params.raw_category_dir))  # synth may have just made it
            write_run_record(params, name, run.info, seconds, metrics)
    except Exception as error:
        if unreachable := as_unreachable(error, params, tracking_uri(params), f"stage '{name}'"):
            raise unreachable from error
        raise
    return metrics


def run_record_path(params: Params, name: str) -> Path:
    """``<artifacts>/runs/<stage>.json``: which MLflow run last produced a stage's outputs.

    Kept outside every DVC-tracked output on purpose: run ids and timings differ on every
    run, and DVC's outputs must hash the same for the same inputs (a clean ``git status``).
    """
    return params.paths.artifacts_dir / "runs" / f"{name}.json"


def write_run_record(params: Params, name: str, info: Any, seconds: float, metrics: dict[str, float]) -> None:
    from components.tracking import tracking_uri

    write_json(
        run_record_path(params, name),
        {
            "stage": name,
            "run_id": info.run_id,
            "experiment_id": info.experiment_id,
            "tracking_uri": tracking_uri(params),
            "seconds": round(seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "metrics": {k: float(v) for k, v in metrics.items()},
        },
    )


def read_run_record(params: Params, name: str) -> dict[str, Any]:
    """The stage's last run record, ``{}`` when it never ran here (or the file is unreadable)."""
    path = run_record_path(params, name)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


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


def _lines(stream: IO[bytes], echo: IO[bytes] | None) -> Iterator[str]:
    """Yield the finished lines of ``stream`` while copying every byte to ``echo`` as it arrives.

    A progress bar redraws itself with ``\r``; the terminal gets every redraw, the lines
    yielded keep only the bar's last state, so a log holds one line per bar, not thousands.
    """
    pending = b""
    while chunk := os.read(stream.fileno(), 65536):
        if echo is not None:
            echo.write(chunk)
            echo.flush()
        pending += chunk
        *done, pending = pending.split(b"\n")
        for raw in done:
            line = _ANSI_ESCAPE.sub("", raw.decode(errors="replace")).rstrip("\r").rsplit("\r", 1)[-1].rstrip()
            if line:
                yield line
    tail = _ANSI_ESCAPE.sub("", pending.decode(errors="replace")).rsplit("\r", 1)[-1].rstrip()
    if tail:
        yield tail


def stream_command(
    command: list[str], cwd: Path, env: dict[str, str], on_line: LineSink | None = None, echo: bool = True
) -> tuple[int, list[str]]:
    """Run ``command`` with its output shown live (and passed line by line to ``on_line``).

    Returns the exit code and the last lines, for the error message of a failed stage.
    """
    env = {**env, "PYTHONUNBUFFERED": "1"}  # a stage's prints reach the terminal as they happen
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        assert process.stdout is not None
        for line in _lines(process.stdout, sys.stdout.buffer if echo else None):
            tail.append(line)
            if on_line is not None:
                on_line(line)
        code = process.wait()
    return code, list(tail)


def stand_in_for_skipped_outputs(stage: Stage, params: Params, root: Path) -> list[Path]:
    """Create, empty, the folders ``stage`` depends on that come from stages the source cannot feed.

    DVC's graph cannot branch on a param, so e.g. ``train_mal`` always depends on the CAM boxes
    (``labels/cam``), which a COCO-only source never makes (no segmentation dataset, no CAM
    classifier). DVC refuses a missing dependency; an empty folder says "nothing came from there",
    and a family that would read it (``mal.boxes: cam``) fails with its own clear message.
    Only folders are stood in for, never files, and only outputs of stages that are skipped.
    """
    from components.pipeline.stages import STAGES

    skipped = {resolve_path(out, params) for s in STAGES if s.skip_reason(params) for out in s.outs}
    made = []
    for dep in stage.deps:
        if resolve_path(dep, params) not in skipped:
            continue
        folder = root / resolve_path(dep, params)  # params paths are relative to the project root
        if not folder.exists() and not folder.suffix:
            folder.mkdir(parents=True)
            made.append(folder)
    return made


def reproduce_stage(
    name: str, params_path: Path | str, parent_run_id: str | None = None, on_line: LineSink | None = None
) -> dict[str, float]:
    """``dvc repro --single-item <stage>``: runs the stage only if its deps, params or outs changed.

    This is the pipeline's one caching mechanism: DVC's lock file and cache, shared by
    ``dvc repro`` and the Prefect flow. A skipped stage reports ``<stage>/cached = 1``.
    The stage's output (training's progress bar and per-epoch metrics included) streams live.
    """
    path = Path(params_path).resolve()
    params = load_params(path)
    stage = get_stage(name)
    stand_in_for_skipped_outputs(stage, params, path.parent)
    env = {**os.environ}
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    ran = False

    def watch(line: str) -> None:
        nonlocal ran
        ran = ran or f"Running stage '{name}'" in line
        if on_line is not None:
            on_line(line)

    code, tail = stream_command(["dvc", "repro", "--single-item", name], path.parent, env, watch)
    if code != 0:
        shown = "\n".join(line for line in tail[-25:] if line.strip())
        raise StageError(f"stage '{name}' failed (dvc repro exit {code}):\n{shown}")
    return {**stage_metrics(stage, params), f"{name}/cached": float(not ran)}


def execute_stage(
    name: str, params_path: Path | str, parent_run_id: str | None = None, on_line: LineSink | None = None
) -> dict[str, float]:
    """The body of a pipeline task: through DVC for the repository's params, directly otherwise.

    Adds ``<stage>/wall_seconds``, the time the task took (a cached stage: DVC's check only).
    """
    started = time.perf_counter()
    if uses_dvc(params_path):
        metrics = reproduce_stage(name, params_path, parent_run_id, on_line)
    else:
        metrics = {**run_stage(name, params_path, parent_run_id), f"{name}/cached": 0.0}
    return {**metrics, f"{name}/wall_seconds": time.perf_counter() - started}


def warm_stage_processes(
    params_path: Path | str, stages: Sequence[Stage] | None = None
) -> contextlib.AbstractContextManager[str | None]:
    """For the ``with`` around a flow's stages: a prefork server when stages run as DVC subprocesses.

    Each such stage would import torch, Lightning, timm and MLflow again (12-15 s on 2 cores);
    :mod:`components.pipeline.prefork` imports them once. Stages run in-process need nothing, and
    neither does a run of the data stages alone (``until=validate``): the server's own imports would
    cost more than they save.
    """
    if not uses_dvc(params_path) or (stages is not None and not any(s.model_family for s in stages)):
        return contextlib.nullcontext()
    from components.pipeline.prefork import warm_stages

    return warm_stages()


def stage_reports(stage: Stage, params: Params) -> list[str]:
    """The Markdown reports a stage wrote (e.g. the benchmark comparison table), for Prefect artifacts."""
    paths = (resolve_path(template, params) for template in stage.reports)
    return [path.read_text() for path in paths if path.is_file()]


def stage_params(keys: tuple[str, ...], params: Params) -> dict[str, str]:
    """The params a stage declares (DVC's ``params:``), flattened to ``section.key`` names."""

    return {k: str(v)[:6000] for k, v in _declared(keys, params).items()}


def _declared(keys: tuple[str, ...], params: Params) -> dict[str, Any]:
    """The flattened ``section.key`` values under the stage's declared params ``keys``."""
    from components.tracking import flatten

    flat = flatten(params.model_dump(mode="json"))
    return {k: v for k, v in flat.items() if any(k == key or k.startswith(key + ".") for key in keys)}


def stage_inputs_key(stage: Stage, params: Params) -> str:
    """A key over what the stage is declared to read: its params' values and its deps' file listing.

    The train stages resume a killed training only under the same key (``components.training.resume``).
    """
    from components.training.resume import inputs_key

    declared = {k: json.dumps(v) for k, v in _declared(stage.params, params).items()}
    return inputs_key(declared, [resolve_path(dep, params) for dep in stage.deps])


PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
"""MLflow's limits of params and of metrics in one ``log_batch`` request."""


def start_pipeline_run(params: Params, run_name: str = "pipeline") -> str:
    """Open the parent MLflow run of a pipeline run and return its id (closed by :func:`end_pipeline_run`)."""
    import mlflow
    from mlflow.entities import Param

    from components.tracking import ensure_experiment, flatten, run_tags, tracking_uri
    from components.tracking_outage import as_unreachable

    try:
        experiment_id = ensure_experiment(params)
        client = mlflow.MlflowClient()
        run = client.create_run(experiment_id, run_name=run_name, tags={**run_tags(params), "kind": "pipeline"})
        flat = flatten(params.model_dump(mode="json"))
        logged = [Param(key, str(value)[:6000]) for key, value in flat.items()]
        for start in range(0, len(logged), PARAMS_PER_BATCH):  # a few requests, not one per param
            client.log_batch(run.info.run_id, params=logged[start : start + PARAMS_PER_BATCH])
    except Exception as error:
        if unreachable := as_unreachable(error, params, tracking_uri(params), "the pipeline run"):
            raise unreachable from error
        raise
    return run.info.run_id


def end_pipeline_run(params: Params, run_id: str, status: str, metrics: dict[str, float]) -> None:
    """Close the parent run with the stages' metrics.

    A server that went down is an error only for a run whose stages all finished; after a failed
    stage, the stage's own error is the one to show, so the run is left open with a warning.
    """
    import mlflow
    from mlflow.entities import Metric

    from components.tracking import tracking_uri, tree_hash
    from components.tracking_outage import as_unreachable, redacted

    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    try:
        # The raw data may only exist now (synth ran inside this pipeline run).
        client.set_tag(run_id, "data_hash", tree_hash(params.raw_category_dir))
        stamp = int(time.time() * 1000)
        logged = [Metric(key, float(value), stamp, 0) for key, value in metrics.items()]
        for start in range(0, len(logged), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=logged[start : start + METRICS_PER_BATCH])
        client.set_terminated(run_id, status=status)
    except Exception as error:
        unreachable = as_unreachable(error, params, uri, "closing the pipeline run")
        if unreachable is None:
            raise
        if status == "FINISHED":
            raise unreachable from error
        print(f"warning: the pipeline run {run_id} stays open: the tracking server at {redacted(uri)} did not answer")
