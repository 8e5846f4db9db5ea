"""onnxruntime sessions, without torch: shared by evaluation (through :mod:`components.export.runtime`)
and by the deployable bundle a line PC runs (:mod:`components.serving.runtime`), so both load a
model with the same optimisation level and threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["OnnxRuntimeError", "create_session"]


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
