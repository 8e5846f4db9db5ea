"""ONNX Runtime sessions of exported models, shaped like the PyTorch model.

Evaluation (each family's ``evaluate``) and the export parity check call a model as
``model(*inputs)`` on torch tensors and read logits back. :class:`OnnxModel` gives an ONNX
file that same face, so FP32 ONNX, INT8 QDQ and
modelopt exports are all measured by the one metrics code the PyTorch model uses, and a
difference in numbers can only come from the model, never from a second evaluation path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from components.models.changenet.model import ONNX_INPUT_NAMES
from components.serving.onnx_session import OnnxRuntimeError, create_session

FINAL_OUTPUT = "output_final"
"""Name of the full-resolution change logits in every exported graph (TAO's name)."""


class OnnxModel:
    """Callable ``(*inputs) -> logits`` over an onnxruntime session, for any model family.

    Torch tensors in (in the graph's input order), torch tensors out: the graph's primary
    output (``primary_output``, default the last one) or all outputs, primary last, with
    ``all_outputs=True``. ``eval()`` exists so that code written for ``nn.Module`` runs unchanged.
    """

    def __init__(
        self,
        path: Path | str,
        threads: int | None = None,
        optimization: str = "all",
        all_outputs: bool = False,
        input_names: tuple[str, ...] | None = None,
        primary_output: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.session = create_session(self.path, threads=threads, optimization=optimization)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.primary_output = primary_output or self.output_names[-1]
        if (input_names is not None and self.input_names != tuple(input_names)) or (
            self.primary_output not in self.output_names
        ):
            raise OnnxRuntimeError(
                f"{self.path}: expected inputs {list(input_names or self.input_names)} and an output "
                f"{self.primary_output!r}, got inputs {list(self.input_names)} and outputs {self.output_names}"
            )
        self.all_outputs = all_outputs

    def eval(self) -> OnnxModel:
        return self

    def run_numpy(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Every output for float32 arrays (raw [0, 1] pixels), in the graph's output order."""
        if len(inputs) != len(self.input_names):
            raise OnnxRuntimeError(f"{self.path}: takes {len(self.input_names)} inputs, got {len(inputs)}")
        feeds = {
            name: np.ascontiguousarray(array, dtype=np.float32)
            for name, array in zip(self.input_names, inputs, strict=True)
        }
        try:
            return list(self.session.run(None, feeds))
        except Exception as error:
            raise OnnxRuntimeError(f"{self.path}: inference failed ({type(error).__name__}: {error})") from None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.run_numpy(*(x.detach().cpu().numpy() for x in inputs))
        by_name = dict(zip(self.output_names, outputs, strict=True))
        primary = torch.from_numpy(by_name[self.primary_output])
        if not self.all_outputs:
            return primary
        side = [torch.from_numpy(by_name[n]) for n in self.output_names if n != self.primary_output]
        return (*side, primary)


class OnnxSegmentModel(OnnxModel):
    """An exported ChangeNet-Segmentation: ``(test, golden) -> output_final`` logits."""

    def __init__(
        self, path: Path | str, threads: int | None = None, optimization: str = "all", all_outputs: bool = False
    ) -> None:
        super().__init__(
            path,
            threads=threads,
            optimization=optimization,
            all_outputs=all_outputs,
            input_names=ONNX_INPUT_NAMES,
            primary_output=FINAL_OUTPUT,
        )

    def predict_full(
        self,
        test: np.ndarray | torch.Tensor,
        golden: np.ndarray | torch.Tensor,
        tile: int,
        overlap: int,
        batch: int = 8,
    ) -> torch.Tensor:
        """Full-size ``(H, W)`` change probability of one pair of any size, for a tile-sized graph
        (``data.tiling``; the sidecar's ``tiling``): windows run ``batch`` at a time and are stitched
        by :func:`components.models.changenet.tiling.predict_tiled`, the code evaluation uses."""
        from components.models.changenet.tiling import predict_tiled

        return predict_tiled(self, test, golden, tile, overlap, batch)


__all__ = ["FINAL_OUTPUT", "OnnxModel", "OnnxRuntimeError", "OnnxSegmentModel", "create_session"]
