"""When a staging folder may be resumed, and the atomic checkpoint writes that keep it resumable."""

from __future__ import annotations

import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from components.training.resume import (
    AtomicCheckpointIO,
    EpochSeeding,
    epoch_seed,
    find_resume_point,
    inputs_key,
    marker_path,
    write_marker,
)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "datasets"
    (folder / "A").mkdir(parents=True)
    (folder / "A" / "0.png").write_bytes(b"png")
    return folder


def _staging(tmp_path: Path, key: str, epoch: int = 1) -> Path:
    staging = tmp_path / ".segment.partial"
    staging.mkdir()
    write_marker(staging, key, "run-1")
    torch.save({"epoch": epoch, "state_dict": {}}, staging / "last.ckpt")
    return staging


def test_the_key_follows_params_and_inputs(inputs: Path) -> None:
    key = inputs_key({"segment.train.epochs": "4"}, [inputs])
    assert key == inputs_key({"segment.train.epochs": "4"}, [inputs])
    assert key != inputs_key({"segment.train.epochs": "5"}, [inputs])
    (inputs / "A" / "1.png").write_bytes(b"png")  # a new image
    assert key != inputs_key({"segment.train.epochs": "4"}, [inputs])
    again = inputs_key({"segment.train.epochs": "4"}, [inputs])
    os.utime(inputs / "A" / "0.png", ns=(1, 1))  # the same bytes rewritten: start over (the safe side)
    assert again != inputs_key({"segment.train.epochs": "4"}, [inputs])
    assert inputs_key({}, [inputs / "missing"]) == inputs_key({}, [])


def test_a_matching_staging_folder_resumes_after_its_last_epoch(tmp_path: Path) -> None:
    staging = _staging(tmp_path, "k", epoch=2)
    point, why = find_resume_point(staging, "k")
    assert point is not None and point.epochs_done == 3 and point.run_id == "run-1"
    assert point.checkpoint == staging / "last.ckpt"
    assert "after epoch 3" in why


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda s: None, "other params or inputs"),  # read with another key below
        (lambda s: marker_path(s).unlink(), "no readable .segment.partial.json"),
        (lambda s: (s / "last.ckpt").unlink(), "no finished epoch"),
        (lambda s: (s / "last.ckpt").write_bytes(b"PK\x03\x04 cut"), "cannot be read"),
    ],
)
def test_anything_else_starts_over(tmp_path: Path, damage, reason: str) -> None:
    staging = _staging(tmp_path, "k")
    damage(staging)
    key = "other" if "other params" in reason else "k"
    point, why = find_resume_point(staging, key)
    assert point is None
    assert reason in why and "starting over" in why


def test_no_staging_folder_is_a_fresh_start_without_a_word(tmp_path: Path) -> None:
    assert find_resume_point(tmp_path / "absent", "k") == (None, "")


def test_each_epoch_draws_the_same_stream_whatever_came_before() -> None:
    """A resumed epoch sees what the uninterrupted one saw, however many draws preceded it."""
    seeding = EpochSeeding(seed=7)
    trainer = SimpleNamespace(current_epoch=2)

    def first_batch_draws() -> tuple[torch.Tensor, float, float]:
        seeding.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
        return torch.rand(3), float(np.random.rand()), random.random()

    torch.rand(11)  # e.g. one data iterator more, or less, before the epoch
    uninterrupted = first_batch_draws()
    torch.manual_seed(123)
    resumed = first_batch_draws()
    assert torch.equal(uninterrupted[0], resumed[0]) and uninterrupted[1:] == resumed[1:]
    trainer.current_epoch = 3
    assert not torch.equal(first_batch_draws()[0], uninterrupted[0])  # another epoch, another stream
    assert epoch_seed(7, 2) != epoch_seed(8, 2)


def test_a_checkpoint_is_renamed_into_place_not_written_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous epoch")
    io = AtomicCheckpointIO()

    def killed(*args: object, **kwargs: object) -> None:
        (tmp_path / "last.ckpt.partial").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2}, target)
    assert target.read_bytes() == b"previous epoch"
    monkeypatch.undo()
    io.save_checkpoint({"epoch": 2}, target)
    assert torch.load(target, weights_only=False)["epoch"] == 2
    assert not (tmp_path / "last.ckpt.partial").exists()
