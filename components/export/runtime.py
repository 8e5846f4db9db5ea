"""ONNX Runtime sessions of exported ChangeNet models, shaped like the PyTorch model.

Evaluation (:func:`components.evaluation.evaluate_segment.evaluate_model`) and the export
parity check call a model as ``model(test, golden)`` on torch tensors and read logits back.
:class:`OnnxSegmentModel` gives an ONNX file that same face, so FP32 ONNX, INT8 QDQ and
modelopt exports are all measured by the one metrics code the PyTorch model uses, and a
difference in numbers can only come from the model, never from a second evaluation path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.models.changenet.model import ONNX_INPUT_NAMES

FINAL_OUTPUT = "output_final"
"""Name of the full-resolution change logits in every exported graph (TAO's name)."""


class OnnxRuntimeError(RuntimeError):
    """An ONNX file that onnxruntime cannot load or run; the message names the file."""


def create_session(
    path: Path | str,
    threads: int | None = None,
    optimization: str = "all",
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path``.

    Args:
        threads: intra-op threads; ``None`` lets onnxruntime use one per physical core.
        optimization: ``disable`` | ``basic`` | ``extended`` | ``all``. ``all`` is what serving
            uses; it is also what fuses Q/DQ pairs around Conv into integer kernels on CPU,
            so INT8 speed and accuracy are only representative at ``extended`` or above.
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {sorted(levels)}, got {optimization!r}")
    path = Path(path)
    if not path.is_file():
        raise OnnxRuntimeError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as error:  # onnxruntime raises its own exception types per failure
        raise OnnxRuntimeError(f"{path}: onnxruntime cannot load it ({type(error).__name__}: {error})") from None


class OnnxSegmentModel:
    """Callable ``(test, golden) -> logits`` over an onnxruntime session.

    Returns the final logits as a torch tensor, or all outputs (final last) with
    ``all_outputs=True``. ``eval()`` exists so that code written for ``nn.Module`` runs unchanged.
    """

    def __init__(
        self, path: Path | str, threads: int | None = None, optimization: str = "all", all_outputs: bool = False
    ) -> None:
        self.path = Path(path)
        self.session = create_session(self.path, threads=threads, optimization=optimization)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if tuple(inputs) != ONNX_INPUT_NAMES or FINAL_OUTPUT not in outputs:
            raise OnnxRuntimeError(
                f"{self.path}: expected inputs {list(ONNX_INPUT_NAMES)} and an output {FINAL_OUTPUT!r}, "
                f"got inputs {inputs} and outputs {outputs}"
            )
        self.output_names = outputs
        self.all_outputs = all_outputs

    def eval(self) -> OnnxSegmentModel:
        return self

    def run_numpy(self, test: np.ndarray, golden: np.ndarray) -> list[np.ndarray]:
        """Every output for float32 ``(N, 3, H, W)`` arrays in [0, 1], in the graph's output order."""
        feeds = {
            ONNX_INPUT_NAMES[0]: np.ascontiguousarray(test, dtype=np.float32),
            ONNX_INPUT_NAMES[1]: np.ascontiguousarray(golden, dtype=np.float32),
        }
        try:
            return list(self.session.run(None, feeds))
        except Exception as error:
            raise OnnxRuntimeError(f"{self.path}: inference failed ({type(error).__name__}: {error})") from None

    def __call__(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.run_numpy(test.detach().cpu().numpy(), golden.detach().cpu().numpy())
        by_name = dict(zip(self.output_names, outputs, strict=True))
        final = torch.from_numpy(by_name[FINAL_OUTPUT])
        if not self.all_outputs:
            return final
        side = [torch.from_numpy(by_name[n]) for n in self.output_names if n != FINAL_OUTPUT]
        return (*side, final)


__all__ = ["FINAL_OUTPUT", "OnnxRuntimeError", "OnnxSegmentModel", "create_session"]
