"""MLflow wiring shared by the CLI and the flows: where runs go and how they are tagged.

Every run carries the git commit, the raw-data hash and the params hash, so that a
number in the MLflow UI can always be traced back to the code, data and knobs that made it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.config import Params

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

LOCAL_UI_URL = "http://127.0.0.1:5000"
"""Where ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` serves a local store."""

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3.17's UI opens an experiment in its GenAI view (traces, assistant) unless this tag
says otherwise; with it, the experiment opens on its training runs."""


def tracking_uri(params: Params) -> str:
    """``tracking.tracking_uri`` from params, else ``MLFLOW_TRACKING_URI``, else a local SQLite store.

    MLflow 3.13+ refuses the old ``./mlruns`` file store, so the default is SQLite.
    """
    return params.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


PIPELINE_OUTPUTS: tuple[str, ...] = ("dvc.lock", "artifacts")
"""Tracked files the pipeline itself rewrites (the lock and the committed metrics): a run that
changes them is still a run of the committed inputs, so they never make a commit ``-dirty``."""


def git_commit(cwd: Path | None = None) -> str:
    """The checked-out commit, with ``-dirty`` when a tracked *input* differs (code, params, data pointers).

    The pipeline's own outputs (:data:`PIPELINE_OUTPUTS`) do not count: otherwise every stage after
    the first to rewrite a metric would record a dirty commit, on a clean checkout too. Outside a git
    checkout (a container image) ``INSPECTOPS_GIT_COMMIT`` names the commit the image was built from;
    failing both, ``unknown``.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                *(f":(exclude){p}" for p in PIPELINE_OUTPUTS),
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("INSPECTOPS_GIT_COMMIT", "unknown")
    return f"{commit}-dirty" if dirty else commit


def default_artifact_location(uri: str) -> str | None:
    """Artifacts beside a SQLite store (``<db dir>/mlartifacts``) instead of MLflow's ``./mlruns`` in the cwd."""
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server decides where artifacts go
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.resolve().parent / "mlartifacts").as_uri()


def ensure_experiment(params: Params) -> str:
    """Select (creating if needed) the params' experiment and return its id."""
    import mlflow

    from components.tracking_outage import configure_retries

    configure_retries(params)  # every stage and pipeline run starts here
    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    if experiment is None:
        try:
            experiment_id = mlflow.create_experiment(
                params.tracking.experiment,
                artifact_location=default_artifact_location(uri),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except mlflow.exceptions.MlflowException:  # created concurrently by another process
            experiment_id = mlflow.get_experiment_by_name(params.tracking.experiment).experiment_id
    else:
        experiment_id = experiment.experiment_id
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made by an older version
            mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def ui_url(uri: str) -> str:
    """The web UI for a tracking URI: the server itself, or ``mlflow ui``'s default for a local store."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI_URL


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """A link a person can open to see one run (for a local store, once ``mlflow ui`` is running)."""
    return f"{ui_url(uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def is_rank_zero() -> bool:
    """True unless this process is a non-zero rank of a distributed job (torchrun or Lightning DDP).

    Only rank 0 talks to MLflow, so a DDP training shows up as one run, not one per process.
    """
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def tree_hash(root: Path) -> str:
    """Content hash of a folder (relative paths + file bytes), stable across machines.

    Used as the ``data_hash`` tag: the same raw category gives the same hash wherever it lives.
    """
    root = Path(root)
    if not root.exists():
        return "missing"
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(root) if path != root else path.name).encode())
        digest.update(b"\0")
        file_digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                file_digest.update(chunk)
        digest.update(file_digest.digest())
    return digest.hexdigest()[:16]


def params_hash(params: Params) -> str:
    payload = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_tags(params: Params) -> dict[str, str]:
    """The provenance tags every inspectops MLflow run carries."""
    tags = {
        "git_commit": git_commit(),
        "data_hash": tree_hash(params.raw_category_dir),
        "params_hash": params_hash(params),
        "data_source": params.data.source,
        "data_category": params.data.category,
    }
    # Set by `dvc exp run`, so experiments can be found in MLflow by their DVC name.
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested params into ``section.key`` names for ``mlflow.log_params``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@contextmanager
def mlflow_run(
    params: Params, run_name: str, tags: Mapping[str, str] | None = None, nested: bool = False
) -> Iterator[Any]:
    """Start an MLflow run in the params' experiment, tagged with provenance."""
    import mlflow

    ensure_experiment(params)
    all_tags = {**run_tags(params), **(tags or {})}
    # Inside a stage's run (the pipeline runner), a component's own run becomes its child.
    nested = nested or mlflow.active_run() is not None
    with mlflow.start_run(run_name=run_name, nested=nested, tags=all_tags) as run:
        yield run


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics; MLflow names allow ``/`` so ``split/metric`` stays readable."""
    import mlflow

    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if numeric:
        mlflow.log_metrics(numeric, step=step)
