"""A short real training on synthetic data: loss falls, MLflow gets the run, checkpoints resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlflow
import pytest

from components.config import Params
from components.evaluation.stage import evaluate_stage
from components.models.changenet.module import load_module
from components.models.checkpoint import CheckpointError
from components.training.runs import training_run as family_training_run
from components.training.train import model_dir as family_model_dir
from components.training.train import train_model


# ChangeNet-Segmentation through the shared stages, as the pipeline runs it.
def train_segment(params: Params) -> dict[str, float]:
    return train_model(params, "segment")


def evaluate_segment(params: Params) -> dict[str, float]:
    return evaluate_stage(params, "segment")


def model_dir(params: Params) -> Path:
    return family_model_dir(params, "segment")


def training_run(params: Params) -> dict:
    return family_training_run(params, "segment")


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(prepared_project: Path) -> tuple[Params, dict[str, float]]:
    from components.config import load_params

    params = load_params(prepared_project)
    return params, train_segment(params)


def _run(params: Params) -> mlflow.entities.Run:
    run_id = training_run(params)["run_id"]
    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    return mlflow.get_run(run_id)


def test_training_lowers_the_loss_and_logs_to_mlflow(trained: tuple[Params, dict[str, float]]) -> None:
    params, metrics = trained
    assert metrics["train/epochs"] == 2
    assert metrics["train/samples_per_second"] > 0
    assert (model_dir(params) / "best.ckpt").is_file()
    assert (model_dir(params) / "last.ckpt").is_file()
    # last.ckpt is the final epoch whichever epoch was best (what a resume must continue from).
    import torch

    assert torch.load(model_dir(params) / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 1
    # checkpoint: last (params.yaml's) ships the final weights: nothing is chosen on the val split it reports
    assert params.segment.train.checkpoint == "last"
    assert torch.load(model_dir(params) / "best.ckpt", map_location="cpu", weights_only=False)["epoch"] == 1
    run = _run(params)
    client = mlflow.MlflowClient()
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss_epoch")]
    assert len(losses) == 2
    assert losses[-1] < losses[0]
    assert "val/iou" in run.data.metrics
    assert run.data.tags["git_commit"]
    assert run.data.tags["data_hash"] not in ("", "missing")
    assert run.data.params["segment.model.backbone"] == "tf_efficientnet_lite0"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "checkpoints" in artifacts
    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    assert [m.name for m in logged] == ["model"]


def test_same_inputs_write_byte_identical_model_files(trained: tuple[Params, dict[str, float]], tmp_path: Path) -> None:
    """DVC hashes the model folder: it must hold nothing run-specific (run ids, absolute paths)."""
    params, _ = trained
    other = params.model_copy(update={"paths": params.paths.model_copy(update={"artifacts_dir": tmp_path / "a"})})
    shutil.copytree(params.datasets_dir, other.datasets_dir)
    train_segment(other)

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert set(digests(model_dir(params))) == {"best.ckpt", "last.ckpt"}
    assert digests(model_dir(other)) == digests(model_dir(params))
    assert (other.metrics_dir / "segment_train.json").read_bytes() == (
        params.metrics_dir / "segment_train.json"
    ).read_bytes()
    assert training_run(other)["run_id"] != training_run(params)["run_id"]


def test_evaluate_writes_metrics_and_pictures_into_the_training_run(trained: tuple[Params, dict[str, float]]) -> None:
    params, _ = trained
    results = evaluate_segment(params)
    written = json.loads((params.metrics_dir / "segment.json").read_text())
    assert set(results) == set(written)
    for key in ("val/iou", "val/precision", "val/recall", "val/f1", "val/oa", "val/image_auroc"):
        assert key in written
    assert 0.0 <= written["val/oa"] <= 1.0
    plots = params.paths.artifacts_dir / "plots" / "segment"
    assert (plots / "val_pr_curve.png").is_file()
    assert len(list((plots / "overlays").glob("*.png"))) == 2
    run = _run(params)
    assert "final/val/iou" in run.data.metrics
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/overlays" in paths


def test_resume_continues_from_the_last_checkpoint(trained: tuple[Params, dict[str, float]], tmp_path: Path) -> None:
    params, _ = trained
    last = tmp_path / "last.ckpt"
    shutil.copy2(model_dir(params) / "last.ckpt", last)
    resumed = params.model_copy(
        update={
            "segment": params.segment.model_copy(
                update={"train": params.segment.train.model_copy(update={"epochs": 3, "resume_from": last})}
            )
        }
    )
    metrics = train_segment(resumed)
    assert metrics["train/epochs"] == 3


def test_bad_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="not found"):
        load_module(missing)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.ckpt"):
        load_module(garbage)
    import torch

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load_module(foreign)
