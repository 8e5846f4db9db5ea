"""Pick a killed training up where it stopped, and give it the same result as one that never stopped.

A training writes into a staging folder (``.<family>.partial``) and moves it into place only when
it finishes. When the process dies (``kill -9``, a lost node, a power cut, Ctrl-C) the staging
folder keeps the ``last.ckpt`` of the last finished epoch. The next start resumes from it, but
only when the training's inputs are the ones it was started with: a marker
beside it holds a key over the stage's params and its inputs' listing (:func:`inputs_key`), and a
staging folder with another key, or none, is discarded.

Three things make the resumed run end where an uninterrupted one would (on the same CPU type):

- Lightning's checkpoint holds the weights, the weight average (a submodule), the optimizer, the
  LR schedule and the loop counters; the data side seeds every sample from ``(seed, epoch, index)``.
- :class:`EpochSeeding` seeds the global generators (dropout, drop-path) from ``(seed, epoch)`` at
  the start of every epoch, so the resumed epochs draw what the uninterrupted ones drew.
- :class:`AtomicCheckpointIO` writes each checkpoint beside its target and renames it into place,
  so a kill during a save leaves the previous epoch's file, never a truncated one; and it writes
  the same bytes for the same state however that state was built (loaded or computed).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

MARKER_SUFFIX = ".json"
"""The staging folder's record of what it was started with sits beside it (``.<family>.partial.json``):
inside, it would make the folder Lightning checkpoints into non-empty on a fresh start."""

__all__ = [
    "MARKER_SUFFIX",
    "AtomicCheckpointIO",
    "EpochSeeding",
    "ResumePoint",
    "epoch_seed",
    "find_resume_point",
    "inputs_key",
    "marker_path",
    "write_marker",
]


def _listing(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of every file under ``paths``: cheap on any dataset size (no reads).

    A file rewritten since the kill, even with the same bytes, changes the key, so such a training
    starts over: the safe side.
    """
    rows: list[tuple[str, int, int]] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for file in files:
            stat = file.stat()
            rows.append((file.as_posix(), stat.st_size, stat.st_mtime_ns))
    return rows


def inputs_key(params: Mapping[str, str], inputs: Iterable[Path]) -> str:
    """A key over a stage's declared params and the listing of its input files and folders."""
    payload = json.dumps({"params": dict(sorted(params.items())), "inputs": _listing(inputs)})
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class ResumePoint:
    """A staging folder's last checkpoint that the current training may continue from."""

    checkpoint: Path
    epochs_done: int
    run_id: str | None
    """The MLflow run of the killed training (the resumed one records it as ``resumed_from_run_id``)."""


def marker_path(staging: Path) -> Path:
    """Where the record of ``staging``'s inputs lives (beside it)."""
    return staging.with_name(staging.name + MARKER_SUFFIX)


def write_marker(staging: Path, key: str, run_id: str | None) -> None:
    """Record which inputs ``staging``'s checkpoints belong to (before the first epoch ends)."""
    staging.parent.mkdir(parents=True, exist_ok=True)
    marker_path(staging).write_text(json.dumps({"inputs_key": key, "run_id": run_id}))


def _epochs_done(checkpoint: Path) -> int | None:
    """Finished epochs in a Lightning checkpoint, or ``None`` when it cannot be read."""
    try:
        state: dict[str, Any] = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
        return int(state["epoch"]) + 1
    except Exception:  # a damaged file is a reason to start over, never to stop
        return None


def find_resume_point(staging: Path, key: str) -> tuple[ResumePoint | None, str]:
    """The checkpoint to resume from in ``staging``, and why (or why not) for the log.

    ``None`` when there is no staging folder, no finished epoch, a checkpoint that cannot be read,
    or inputs that changed since it was started (a different ``key``).
    """
    last = staging / "last.ckpt"
    if not staging.exists():
        return None, ""
    if not last.is_file():
        return None, f"{staging} holds no finished epoch: starting over"
    try:
        marker = json.loads(marker_path(staging).read_text())
    except (OSError, ValueError):
        return None, f"{staging} has no readable {marker_path(staging).name}: starting over"
    if marker.get("inputs_key") != key:
        return None, f"{staging} was started with other params or inputs: starting over"
    epochs = _epochs_done(last)
    if epochs is None:
        return None, f"{last} cannot be read: starting over"
    run_id = marker.get("run_id")
    point = ResumePoint(checkpoint=last, epochs_done=epochs, run_id=run_id if isinstance(run_id, str) else None)
    return point, f"resuming an interrupted training after epoch {epochs} from {last} (same params and inputs)"


class EpochSeeding(Callback):
    """Seed the global generators (torch, NumPy, Python) from ``(seed, epoch)`` at each epoch's first batch.

    The global generators drive dropout, drop-path and anything else a model draws while training.
    Saving their state in the checkpoint is not enough: Lightning creates the resumed run's data
    iterator (one draw) before it restores anything, while the uninterrupted run creates it after the
    checkpoint was saved, so the two would stay one draw apart for the rest of the training. Seeding
    each epoch from ``(seed, epoch)`` after its iterator exists gives both the same stream, the way
    the data side seeds every sample from ``(seed, epoch, index)``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            seed_global_generators(epoch_seed(self.seed, trainer.current_epoch))


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed mixed from the training seed and the epoch (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_global_generators(seed: int) -> None:
    torch.manual_seed(seed)  # CUDA's generators too
    np.random.seed(seed)
    random.seed(seed)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write a checkpoint beside its target and rename it into place: a kill mid-save keeps the old one.

    The strings in it are interned first. Pickle writes a string once per *object*, so a state loaded
    from a checkpoint (whose equal keys are separate objects) would pickle to other bytes than the same
    state built in memory: the same model, but another DVC hash after a resume.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        partial = target.with_name(f"{target.name}.partial")
        super().save_checkpoint(_interned(checkpoint), partial, storage_options)
        os.replace(partial, target)


def _interned(value: Any) -> Any:
    """``value`` with every string in its dicts, lists and tuples interned (dicts and lists in place,
    keeping their type and order)."""
    if isinstance(value, str):
        return sys.intern(value) if type(value) is str else value
    if isinstance(value, dict):
        items = [(_interned(k), _interned(v)) for k, v in value.items()]
        value.clear()
        value.update(items)
        return value
    if isinstance(value, list):
        value[:] = [_interned(v) for v in value]
        return value
    if type(value) is tuple:
        return tuple(_interned(v) for v in value)
    return value
