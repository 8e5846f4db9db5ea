"""Deployment exports of ChangeNet-Segmentation: ONNX with a parity check, and the stage bodies.

``export_segment_onnx`` writes one self-contained ONNX file (raw [0, 1] inputs ``input0``/``input1``,
``output_final`` logits, dynamic batch) and refuses to leave a model that does not match PyTorch.
``OnnxSegmentModel`` runs such a file through onnxruntime with the PyTorch model's call signature.

Names are imported on first use, so importing one light module of the package (a family's
interface, a path helper) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES: dict[str, str] = {
    "ExportError": "components.export.onnx_export",
    "FINAL_OUTPUT": "components.export.runtime",
    "OnnxRuntimeError": "components.export.runtime",
    "OnnxSegmentModel": "components.export.runtime",
    "SegmentExportWrapper": "components.export.onnx_export",
    "assert_self_contained": "components.export.onnx_export",
    "create_session": "components.export.runtime",
    "export_segment_onnx": "components.export.onnx_export",
    "parity_pairs_from_dataset": "components.export.onnx_export",
    "read_sidecar": "components.export.onnx_export",
    "sidecar_path": "components.export.onnx_export",
}

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


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
