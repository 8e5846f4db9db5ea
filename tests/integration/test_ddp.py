"""Lightning DDP on 2 CPU processes (gloo) trains like 1 process, and only rank 0 logs to MLflow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from components.config import load_params
from components.pipeline import steps
from tests.conftest import write_params
from tests.integration.conftest import TINY_SEGMENT

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _train(params_path: Path, *overrides: str) -> dict:
    args = [sys.executable, "-m", "components.cli", "train", "segment", "--params", str(params_path)]
    for item in overrides:
        args += ["-S", item]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    params = load_params(params_path)
    return json.loads((params.metrics_dir / "segment_train.json").read_text())


def test_two_cpu_processes_match_one_and_only_rank_zero_logs(tmp_path: Path) -> None:
    segment = {**TINY_SEGMENT, "train": {**TINY_SEGMENT["train"], "epochs": 2, "accelerator": "cpu"}}
    single_path = write_params(tmp_path / "single", segment=segment)
    params = load_params(single_path)
    steps.synth(params)
    steps.prepare(params)
    steps.validate(params)
    single = _train(single_path)

    # Same data, its own artifacts and MLflow store; per-process batch halved so the global batch is equal.
    ddp_root = tmp_path / "ddp"
    ddp_path = write_params(
        ddp_root,
        segment=segment,
        paths={"data_dir": str(params.paths.data_dir), "artifacts_dir": str(ddp_root / "artifacts")},
    )
    shutil.copytree(params.datasets_dir, ddp_root / "artifacts" / "datasets")
    shutil.copytree(params.metrics_dir, ddp_root / "artifacts" / "metrics")
    batch = TINY_SEGMENT["train"]["batch_size"] // 2
    ddp = _train(ddp_path, "segment.train.devices=2", "segment.train.strategy=ddp", f"segment.train.batch_size={batch}")

    assert ddp["train/epochs"] == single["train/epochs"] == 2
    assert abs(ddp["train/best_val_iou"] - single["train/best_val_iou"]) < 0.15

    ddp_params = load_params(ddp_path)
    mlflow.set_tracking_uri(ddp_params.tracking.tracking_uri)
    experiment = mlflow.get_experiment_by_name(ddp_params.tracking.experiment)
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    train_runs = [r for r in runs if "train/loss_epoch" in r.data.metrics]
    assert len(train_runs) == 1, "only rank 0 may log the training run"
