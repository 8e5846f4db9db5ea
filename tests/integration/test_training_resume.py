"""A training killed mid-epoch (``kill -9``) resumes from its last finished epoch and ends with the
same model and metrics as a training that was never interrupted (issue #31)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch

from components.config import Params, load_params
from components.pipeline.runner import run_stage
from components.training.runs import training_run
from tests.conftest import REPO_ROOT, write_params
from tests.integration.conftest import TINY_SEGMENT

pytestmark = pytest.mark.slow

EPOCHS = 3
RESUMABLE_SEGMENT = {
    **TINY_SEGMENT,
    # Everything a resumed epoch must restore: the weight average, the defect-share sampler's epoch,
    # augmentation drawn per (seed, epoch, index), the LR schedule.
    "train": {
        **TINY_SEGMENT["train"],
        "epochs": EPOCHS,
        "limit_train_batches": 4,
        "ema": {"decay": 0.9},
        "defect_share": 0.3,
    },
}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The in-process trainings use one thread, as the killed child does (OMP_NUM_THREADS=1):
    the same float reductions, so the same bytes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _project(root: Path, prepared_project: Path) -> Params:
    """A project with the session's prepared data and validation report, and its own artifacts
    (one MLflow store beside the projects: each new store costs seconds of schema migration)."""
    tracking = {"tracking_uri": f"sqlite:///{root.parent / 'mlflow.db'}", "experiment": "tests"}
    params = load_params(write_params(root, segment=RESUMABLE_SEGMENT, tracking=tracking))
    prepared = load_params(prepared_project)
    shutil.copytree(prepared.datasets_dir, params.datasets_dir)
    params.metrics_dir.mkdir(parents=True)
    shutil.copy2(prepared.metrics_dir / "validation.json", params.metrics_dir / "validation.json")
    return params


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _kill_during_second_epoch(params_path: Path, staging: Path) -> None:
    """Start ``inspectops train segment`` and ``kill -9`` it once its first epoch is checkpointed."""
    child = subprocess.Popen(
        [sys.executable, "-m", "components.cli", "train", "segment", "--params", str(params_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (staging / "last.ckpt").is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if child.poll() is not None or not (staging / "last.ckpt").is_file():
        child.kill()
        pytest.fail(f"training never checkpointed an epoch:\n{child.communicate()[0][-4000:]}")
    time.sleep(0.3)  # into the next epoch's batches
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL


def test_a_killed_training_resumes_and_ends_as_if_never_stopped(
    prepared_project: Path, tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = _project(tmp_path / "straight", prepared_project)
    run_stage("train_segment", straight)

    killed = _project(tmp_path / "killed", prepared_project)
    models = killed.paths.artifacts_dir / "models"
    staging = models / ".segment.partial"
    _kill_during_second_epoch(tmp_path / "killed" / "params.yaml", staging)
    assert not (models / "segment").exists()  # nothing half-trained is published
    epochs_done = torch.load(staging / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] + 1
    assert 1 <= epochs_done < EPOCHS
    assert training_run(killed, "segment") == {}  # the record of a trained model is written only at the end

    capsys.readouterr()
    metrics = run_stage("train_segment", killed)
    assert f"resuming an interrupted training after epoch {epochs_done}" in capsys.readouterr().out
    assert metrics["train/epochs"] == EPOCHS

    # The same model, byte for byte, and the same metrics as the training that never stopped.
    assert _digests(models / "segment") == _digests(straight.paths.artifacts_dir / "models" / "segment")
    assert (killed.metrics_dir / "segment_train.json").read_bytes() == (
        straight.metrics_dir / "segment_train.json"
    ).read_bytes()
    assert not staging.exists()

    # MLflow: the killed run is closed as KILLED, the resumed one points at it.
    mlflow.set_tracking_uri(killed.tracking.tracking_uri)
    resumed = mlflow.get_run(training_run(killed, "segment")["run_id"])
    before = mlflow.get_run(resumed.data.tags["resumed_from_run_id"])
    assert before.info.status == "KILLED"
    assert before.info.run_name == resumed.info.run_name == "train_segment"
