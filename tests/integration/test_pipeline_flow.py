"""The Prefect flow runs the stage graph, tracks it in MLflow and names the stage that fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from prefect.settings import PREFECT_API_URL

from components.config import load_params
from components.pipeline.run_lock import LOCK_NAME, PipelineBusyError
from flows.pipeline import pipeline_flow
from tests.conftest import write_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _runs(params_path: Path) -> list[mlflow.entities.Run]:
    params = load_params(params_path)
    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    return mlflow.search_runs([experiment.experiment_id], output_format="list")


def test_data_stages_run_as_child_runs_of_one_pipeline_run(prefect_server: None, tmp_path: Path) -> None:
    params_path = write_params(tmp_path)
    results = pipeline_flow(params_path=str(params_path), until="validate")
    assert list(results) == ["synth", "prepare", "validate"]
    assert results["prepare"]["segment/train"] > 0
    assert results["validate"]["validation/success"] == 1.0

    runs = _runs(params_path)
    parents = [r for r in runs if r.data.tags.get("kind") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"synth", "prepare", "validate"}
    assert children["prepare"].data.metrics["segment/val"] == results["prepare"]["segment/val"]
    for run in [parent, *children.values()]:
        assert run.data.tags["git_commit"]
        assert len(run.data.tags["data_hash"]) == 16

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    latest = {a.key: a for a in artifact}
    table = str(latest["inspectops-pipeline-summary"].data)
    assert "| prepare | ran |" in table and "segment/val" in table
    assert f"/runs/{children['prepare'].info.run_id})" in table  # each row links its MLflow run


def test_a_failing_stage_is_named_and_the_parent_run_marked_failed(prefect_server: None, tmp_path: Path) -> None:
    params_path = write_params(tmp_path, data={"source": "mvtec"})  # nothing ingested: prepare must fail
    with pytest.raises(Exception, match="stage 'prepare' failed"):
        pipeline_flow(params_path=str(params_path), until="validate")
    runs = _runs(params_path)
    parent = next(r for r in runs if r.data.tags.get("kind") == "pipeline")
    assert parent.info.status == "FAILED"
    failed = next(r for r in runs if r.data.tags.get("stage") == "prepare")
    assert "category folder not found" in failed.data.tags["failure"]


def test_whole_pipeline_trains_registers_and_promotes(prefect_server: None, tmp_path: Path) -> None:
    from tests.integration.conftest import TINY_SEGMENT

    params_path = write_params(tmp_path, segment=TINY_SEGMENT)
    results = pipeline_flow(params_path=str(params_path))
    assert {"train_segment", "evaluate_segment", "register_segment", "train_mal", "label_mal"} <= set(results)
    assert results["register_segment"]["register/promoted"] == 1.0

    params = load_params(params_path)
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(params.tracking.registered_model, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["promotion"] == "promoted"

    runs = _runs(params_path)
    parent = next(r for r in runs if r.data.tags.get("kind") == "pipeline")
    train = next(r for r in runs if r.data.tags.get("stage") == "train_segment")
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "final/val/iou" in train.data.metrics  # evaluate adds its numbers to the training run
    # the champion the flow registered is the deployable ONNX bundle with its card, not a pickle
    from components.serving.infer import resolve_bundle
    from components.serving.runtime import DeployBundle

    assert champion.source.endswith("deployable") and "## Lineage" in champion.description
    assert champion.tags["params_hash"] and champion.tags["git_commit"] == train.data.tags["git_commit"]
    bundle = DeployBundle(resolve_bundle(f"models:/{params.tracking.registered_model}@champion"))
    assert bundle.family == "segment" and bundle.threshold is not None


def test_a_second_run_on_the_same_checkout_stops_and_the_first_completes(prefect_server: None, tmp_path: Path) -> None:
    params_path = write_params(tmp_path)
    lock = tmp_path / "artifacts" / LOCK_NAME
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "components.cli",
            "pipeline",
            "run",
            "--params",
            str(params_path),
            "--until",
            "validate",
        ],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())},  # the session's test server
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not (lock.is_file() and lock.read_text()) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not (lock.is_file() and lock.read_text()):
        first.kill()
        pytest.fail(f"the first run never held the lock:\n{first.communicate()[0][-4000:]}")
    holder = json.loads(lock.read_text())
    assert holder["pid"] == str(first.pid) and holder["params"] == str(params_path)

    with pytest.raises(PipelineBusyError, match=f"pid {first.pid}"):
        pipeline_flow(params_path=str(params_path), until="validate")

    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output[-4000:]
    metrics = json.loads((tmp_path / "artifacts" / "metrics" / "validation.json").read_text())
    assert metrics["validation/success"] == 1.0  # the first run's outputs are whole
    assert lock.read_text() == ""  # released
