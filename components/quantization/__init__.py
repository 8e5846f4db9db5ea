"""Post-training quantization of ChangeNet-Segmentation, judged against the FP32 model on val.

Backends (``quantize.backends``), each a module here:

- :mod:`.onnxruntime_ptq`: static INT8 Q/DQ with onnxruntime, two graphs from one calibration:
  ``segment_int8_qdq.onnx`` (S8S8, for TensorRT) and ``segment_int8_cpu.onnx`` (U8S8 with exact
  rewrites, for onnxruntime on x86 CPUs);
- :mod:`.modelopt_ptq`: NVIDIA ModelOpt INT8 (or FP8) Q/DQ ONNX for TensorRT;
- :mod:`.torchao_ptq`: torchao int8 weight-only for serving from PyTorch.

:mod:`.calibration` draws the shared calibration pairs, :mod:`.onnx_rewrite` holds the exact
graph rewrites, :mod:`.evaluate` measures each model and writes its promotion verdict. The stage
body that runs them is :func:`components.export.stage.quantize_stage`. Submodules are imported
on use: each backend pulls in a heavy library (onnxruntime, modelopt, torchao) of its own.
"""

__all__ = ["calibration", "evaluate", "modelopt_ptq", "onnx_rewrite", "onnxruntime_ptq", "torchao_ptq"]
