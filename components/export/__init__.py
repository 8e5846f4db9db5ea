"""Deployment exports of ChangeNet-Segmentation: ONNX with a parity check, and the stage bodies.

``export_segment_onnx`` writes one self-contained ONNX file (raw [0, 1] inputs ``input0``/``input1``,
``output_final`` logits, dynamic batch) and refuses to leave a model that does not match PyTorch.
``OnnxSegmentModel`` runs such a file through onnxruntime with the PyTorch model's call signature.
"""

from components.export.onnx_export import (
    ExportError,
    SegmentExportWrapper,
    assert_self_contained,
    export_segment_onnx,
    parity_pairs_from_dataset,
    read_sidecar,
    sidecar_path,
)
from components.export.runtime import FINAL_OUTPUT, OnnxRuntimeError, OnnxSegmentModel, create_session

__all__ = [
    "FINAL_OUTPUT",
    "ExportError",
    "OnnxRuntimeError",
    "OnnxSegmentModel",
    "SegmentExportWrapper",
    "assert_self_contained",
    "create_session",
    "export_segment_onnx",
    "parity_pairs_from_dataset",
    "read_sidecar",
    "sidecar_path",
]
