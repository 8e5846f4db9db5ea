"""Static INT8 (or FP8) post-training quantization with NVIDIA ModelOpt, exported as Q/DQ ONNX.

ModelOpt is NVIDIA's own route to a TensorRT-ready quantized model: it inserts fake-quantizers
into the PyTorch model (per-channel weights, per-tensor inputs of every decoder
Conv/ConvTranspose; the backbone stays float, see :data:`FLOAT_PATTERNS`),
calibrates their ranges with a forward loop over the calibration pairs (``max`` calibration
in ``INT8_DEFAULT_CFG``) and exports QuantizeLinear/DequantizeLinear pairs through the legacy
ONNX exporter. It runs on CPU, so calibration needs no GPU.

Only *inputs* of the quantized layers get Q/DQ (TensorRT fuses the rest), so onnxruntime on a
CPU runs this graph as dequantize + float convolution: correct, and fit for measuring accuracy,
but not a fast CPU model. FP8 exports as TensorRT's own ``trt::TRT_FP8QuantizeLinear`` ops,
which onnxruntime cannot load at all: that model is written for TensorRT and not evaluated here.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.export.onnx_export import assert_self_contained
from components.export.static_padding import freeze_same_padding
from components.models.changenet.model import ONNX_INPUT_NAMES
from components.quantization.calibration import CalibrationSet

CALIBRATION_BATCH = 4
FLOAT_PATTERNS: tuple[str, ...] = ("*backbone*",)
"""Quantizers disabled: the backbone, whose INT8 noise reads as false change (see
:data:`components.models.changenet.family.FLOAT_SCOPES`); ModelOpt's default config, which
quantizes it too, lost 15 points of change-IoU on the transistor checkpoint."""
FILENAMES = {"int8": "modelopt_int8.onnx", "fp8": "modelopt_fp8.onnx"}
"""File names after the family prefix (``<family>_modelopt_int8.onnx``)."""


class ModelOptError(RuntimeError):
    """ModelOpt quantization or export that failed; the message names the output file."""


def modelopt_config(fmt: str, per_channel: bool) -> dict[str, Any]:
    """ModelOpt's default INT8 or FP8 config; per-tensor weights when ``per_channel`` is off."""
    import modelopt.torch.quantization as mtq

    if fmt not in FILENAMES:
        raise ValueError(f"modelopt format must be one of {sorted(FILENAMES)}, got {fmt!r}")
    config = copy.deepcopy(mtq.INT8_DEFAULT_CFG if fmt == "int8" else mtq.FP8_DEFAULT_CFG)
    entries = config["quant_cfg"]
    if not isinstance(entries, list):
        raise ModelOptError(
            f"unexpected ModelOpt config layout {type(entries).__name__}; expected a list of quantizer entries"
        )
    if not per_channel:
        for entry in entries:
            if entry.get("quantizer_name") == "*weight_quantizer" and isinstance(entry.get("cfg"), dict):
                entry["cfg"]["axis"] = None
    # Later entries win: keep the Siamese backbone float, as the onnxruntime recipe does (changenet FLOAT_SCOPES).
    entries.extend({"quantizer_name": pattern, "enable": False} for pattern in FLOAT_PATTERNS)
    return config


def runs_in_onnxruntime(fmt: str) -> bool:
    """INT8 Q/DQ runs in onnxruntime CPU; FP8 uses TensorRT-only custom ops."""
    return fmt == "int8"


def quantize_modelopt(
    model: nn.Module,
    out_path: Path | str,
    calibration: CalibrationSet,
    fmt: str = "int8",
    per_channel: bool = True,
    opset: int = 17,
    input_names: tuple[str, ...] = ONNX_INPUT_NAMES,
    output_names: tuple[str, ...] = ("output_final",),
) -> dict[str, Any]:
    """Quantize a copy of ``model`` (a family's export module) and export it to ``out_path``.

    ``model`` takes the inputs of ``calibration`` and returns the outputs named ``output_names``.

    ``model`` itself is left untouched. Returns a description for the model's sidecar.
    """
    import modelopt.torch.quantization as mtq

    out_path = Path(out_path)
    started = time.perf_counter()
    example = tuple(x[:2].clone() for x in calibration.inputs)
    # Same constant padding as the FP32 export, so the two graphs differ only by Q/DQ.
    work, _ = freeze_same_padding(copy.deepcopy(model).eval(), example)

    def forward_loop(module: nn.Module) -> None:
        with torch.no_grad():
            for batch in calibration.batches(CALIBRATION_BATCH):
                module(*batch)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.stem}.tmp-", suffix=".onnx", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = mtq.quantize(work, modelopt_config(fmt, per_channel), forward_loop)
            dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
            with torch.no_grad():
                torch.onnx.export(
                    quantized.eval(),
                    example,
                    str(tmp),
                    input_names=list(input_names),
                    output_names=list(output_names),
                    dynamic_axes=dynamic,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
        if runs_in_onnxruntime(fmt):
            assert_self_contained(tmp)  # the checker rejects FP8's TensorRT custom-op domain
        tmp.chmod(0o644)
        os.replace(tmp, out_path)
    except Exception as error:
        tmp.unlink(missing_ok=True)
        raise ModelOptError(
            f"{out_path}: modelopt {fmt} quantization/export failed: {type(error).__name__}: {error}"
        ) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    quantizers = sum(
        1
        for name, module in quantized.named_modules()
        if name.endswith(("input_quantizer", "weight_quantizer")) and getattr(module, "is_enabled", True)
    )
    return {
        "backend": "modelopt",
        "variant": "modelopt",
        "target": "tensorrt",
        "format": "onnx-qdq",
        "precision": fmt,
        "weights": ("per-channel" if per_channel else "per-tensor"),
        "calibration_method": "max",
        "enabled_quantizers": quantizers,
        "float_patterns": list(FLOAT_PATTERNS),
        "image_size": [int(example[0].shape[-2]), int(example[0].shape[-1])],
        "runs_in_onnxruntime": runs_in_onnxruntime(fmt),
        "seconds": time.perf_counter() - started,
    }


__all__ = ["FILENAMES", "ModelOptError", "modelopt_config", "quantize_modelopt", "runs_in_onnxruntime"]
