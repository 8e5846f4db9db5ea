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

from components.models.changenet.data import ChangeSegmentDataset
from components.models.changenet.model import ONNX_INPUT_NAMES

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
    """Calibration samples of any model family: one ``(N, C, H, W)`` stack per ONNX input, in [0, 1].

    ``inputs`` line up with ``input_names`` (the exported graph's inputs); ``names`` say which
    samples they are (for the sidecar and for people). Families build them with
    :meth:`ModelFamily.calibration_inputs`, each with a seeded draw from its train split.
    """

    def __init__(
        self, inputs: tuple[torch.Tensor, ...], input_names: tuple[str, ...], names: list[str] | None = None
    ) -> None:
        if len(inputs) != len(input_names) or not inputs or any(len(x) != len(inputs[0]) for x in inputs):
            raise ValueError(f"calibration needs one equally long stack per input {list(input_names)}")
        self.inputs = tuple(inputs)
        self.input_names = tuple(input_names)
        self.names: list[str] = list(names) if names is not None else [str(i) for i in range(len(inputs[0]))]

    def __len__(self) -> int:
        return len(self.names)

    def batches(self, batch_size: int = 1) -> Iterator[tuple[torch.Tensor, ...]]:
        """Input batches in a fixed order (modelopt's forward loop uses these)."""
        for start in range(0, len(self), batch_size):
            yield tuple(x[start : start + batch_size] for x in self.inputs)

    def onnx_reader(self, batch_size: int = 1) -> OnnxCalibrationReader:
        return OnnxCalibrationReader(self, batch_size)


def segment_calibration(
    datasets_dir: Path | str, count: int, seed: int, split: str = CALIBRATION_SPLIT, tile: int | None = None
) -> CalibrationSet:
    """ChangeNet-Segmentation's calibration: ``count`` seeded train pairs, un-augmented.

    ``tile`` (``data.tiling``): each native-size pair gives one seeded ``tile``-sized crop, the
    exported model's input size."""
    dataset = ChangeSegmentDataset(datasets_dir, split, augment=None, seed=seed)
    indices = calibration_indices(len(dataset), count, seed)
    items = [dataset[i] for i in indices]
    if tile is not None:
        from components.models.changenet.tiling import sample_tile

        rng = np.random.default_rng([int(seed), CALIBRATION_STREAM, 1])
        items = [sample_tile(item, tile, tuple(rng.random(2))) for item in items]
    return CalibrationSet(
        (torch.stack([it["test"] for it in items]), torch.stack([it["golden"] for it in items])),
        ONNX_INPUT_NAMES,
        [it["name"] for it in items],
    )


class OnnxCalibrationReader(CalibrationDataReader):
    """An onnxruntime ``CalibrationDataReader`` over a :class:`CalibrationSet`.

    ``quantize_static`` pulls feeds with ``get_next`` until it gets ``None``; ``rewind``
    lets the same reader serve a second calibration (e.g. the CPU and TensorRT variants).
    """

    def __init__(self, calibration: CalibrationSet, batch_size: int = 1) -> None:
        self.calibration = calibration
        self.batch_size = batch_size
        self._iter: Iterator[tuple[torch.Tensor, ...]] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self.calibration.batches(self.batch_size)
        try:
            batch = next(self._iter)
        except StopIteration:
            return None
        return {name: x.numpy() for name, x in zip(self.calibration.input_names, batch, strict=True)}

    def rewind(self) -> None:
        self._iter = None


__all__ = ["CALIBRATION_SPLIT", "CalibrationSet", "OnnxCalibrationReader", "calibration_indices", "segment_calibration"]
