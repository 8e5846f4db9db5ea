"""Calibration data for post-training quantization: a seeded sample of real train pairs.

Every backend (onnxruntime, modelopt) calibrates on the *same* pairs, so a difference in
their accuracy comes from the quantizer, not from what it saw. The sample is drawn from
train (never val, which judges the result) without augmentation (calibration must see the
pixel statistics of deployment) and is fixed by ``params.seed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from components.models.changenet.model import ONNX_INPUT_NAMES
from components.training.segment_data import ChangeSegmentDataset

CALIBRATION_SPLIT = "train"
CALIBRATION_STREAM = 2
"""Separates the calibration draw from other uses of ``params.seed``."""


def calibration_indices(num_items: int, count: int, seed: int) -> list[int]:
    """``min(count, num_items)`` distinct indices drawn from ``seed``, in ascending order."""
    if num_items < 1:
        raise ValueError("cannot draw calibration samples from an empty split")
    rng = np.random.default_rng([int(seed), CALIBRATION_STREAM])
    chosen = rng.choice(num_items, size=min(int(count), num_items), replace=False)
    return sorted(int(i) for i in chosen)


class CalibrationSet:
    """The calibration pairs: ``test``/``golden`` stacks ``(N, 3, H, W)`` in [0, 1] and their names."""

    def __init__(self, datasets_dir: Path | str, count: int, seed: int, split: str = CALIBRATION_SPLIT) -> None:
        dataset = ChangeSegmentDataset(datasets_dir, split, augment=None, seed=seed)
        self.indices = calibration_indices(len(dataset), count, seed)
        items = [dataset[i] for i in self.indices]
        self.names: list[str] = [it["name"] for it in items]
        self.test = torch.stack([it["test"] for it in items])
        self.golden = torch.stack([it["golden"] for it in items])

    def __len__(self) -> int:
        return len(self.names)

    def batches(self, batch_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(test, golden)`` batches in a fixed order (modelopt's forward loop uses these)."""
        for start in range(0, len(self), batch_size):
            yield self.test[start : start + batch_size], self.golden[start : start + batch_size]

    def onnx_reader(self, batch_size: int = 1) -> OnnxCalibrationReader:
        return OnnxCalibrationReader(self, batch_size)


class OnnxCalibrationReader(CalibrationDataReader):
    """An onnxruntime ``CalibrationDataReader`` over a :class:`CalibrationSet`.

    ``quantize_static`` pulls feeds with ``get_next`` until it gets ``None``; ``rewind``
    lets the same reader serve a second calibration (e.g. the CPU and TensorRT variants).
    """

    def __init__(self, calibration: CalibrationSet, batch_size: int = 1) -> None:
        self.calibration = calibration
        self.batch_size = batch_size
        self._iter: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self.calibration.batches(self.batch_size)
        try:
            test, golden = next(self._iter)
        except StopIteration:
            return None
        return {ONNX_INPUT_NAMES[0]: test.numpy(), ONNX_INPUT_NAMES[1]: golden.numpy()}

    def rewind(self) -> None:
        self._iter = None


__all__ = ["CALIBRATION_SPLIT", "CalibrationSet", "OnnxCalibrationReader", "calibration_indices"]
