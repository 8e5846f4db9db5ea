"""Static INT8 post-training quantization of the FP32 ONNX export with onnxruntime.

Two variants come out of one calibration sample, because the best Q/DQ graph for TensorRT is
not the best one for onnxruntime on an x86 CPU:

``tensorrt`` -> ``<family>_int8_qdq.onnx``
    Symmetric INT8 activations and weights (S8S8, zero points 0), per-channel weights, Q/DQ
    format, graph structure as exported. TensorRT only accepts symmetric Q/DQ. onnxruntime CPU
    runs it correctly (so its accuracy is measured here) but no faster than FP32: its x86
    integer kernels are built around unsigned activations.

``cpu`` -> ``<family>_int8_cpu.onnx``
    Unsigned asymmetric activations with signed symmetric weights (U8S8), what onnxruntime's
    x86 kernels (VNNI ``vpdpbusd``) compute natively, plus exact graph rewrites
    (:mod:`components.quantization.onnx_rewrite`): ``ConvTranspose`` as sub-pixel convolution
    (onnxruntime has no integer ``ConvTranspose``; the float island and its layout transposes
    cost ~65% more time), the 64->2 classifier as 1x1 conv + shifted sum (~11%), and the frozen
    SAME pads folded into their convolutions. ``reduce_range`` stays off: it exists for pre-VNNI
    CPUs, whose 16-bit intermediate sums can saturate; on VNNI it only costs weight precision.

Both keep the family's ``quantization_float_scopes`` in float (ChangeNet: the input path and
the Siamese backbone; see :mod:`components.models.changenet.family` for why).
Both start with ``quant_pre_process`` (symbolic shape inference and onnxruntime's basic graph
optimizations), so that BatchNorms are folded before calibration and every activation has the
shape information the quantizer needs.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from components.export.onnx_export import assert_self_contained
from components.quantization.calibration import CalibrationSet
from components.quantization.onnx_rewrite import (
    convtranspose_to_subpixel,
    fuse_pad_into_conv,
    narrow_conv_to_shifted_sum,
)

_log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class OnnxQuantizationError(RuntimeError):
    """onnxruntime quantization that failed; the message names the input and output files."""


@dataclass(frozen=True)
class OrtVariant:
    """One onnxruntime INT8 recipe and the file it writes."""

    key: str
    """Metric key part: ``quantize/<key>/...``."""
    filename: str
    """File name after the family prefix (``<family>_<filename>``)."""
    target: str
    """Runtime the graph is shaped for (``tensorrt`` or ``onnxruntime-cpu``)."""
    unsigned_activations: bool
    subpixel_upsampling: bool
    shifted_sum_classifier: bool = False
    reduce_range: bool = False
    float_scopes: tuple[str, ...] = ()
    """Node-name scopes kept in float: a name prefix, or ``"input"`` for :data:`INPUT_SCOPE`. The
    model family decides (``ModelFamily.quantization_float_scopes``)."""
    extra_options: dict[str, Any] = field(default_factory=dict)


INPUT_SCOPE = re.compile(r"^/model/[A-Za-z]+(_\d+)?$")
"""Nodes of ``ChangeNetSegment.forward`` itself: pixel normalisation, the test/golden concat, feature slicing."""
TENSORRT_VARIANT = OrtVariant(
    key="onnxruntime",
    filename="int8_qdq.onnx",
    target="tensorrt",
    unsigned_activations=False,
    subpixel_upsampling=False,
)
CPU_VARIANT = OrtVariant(
    key="onnxruntime_cpu",
    filename="int8_cpu.onnx",
    target="onnxruntime-cpu",
    unsigned_activations=True,
    subpixel_upsampling=True,
    shifted_sum_classifier=True,
)
VARIANTS: tuple[OrtVariant, ...] = (TENSORRT_VARIANT, CPU_VARIANT)


def preprocess(model_path: Path, out_path: Path) -> dict[str, int]:
    """``quant_pre_process`` then the rewrites every variant gets; returns what the rewrites did.

    Falls back to onnx's own shape inference when the symbolic one cannot resolve a graph (a
    backbone with dynamic padding that :mod:`components.export.static_padding` did not freeze).
    """
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(model_path), str(out_path))
    except Exception as error:  # symbolic shape inference raises a bare Exception
        _log.warning("%s: symbolic shape inference failed (%s); using onnx shape inference only", model_path, error)
        quant_pre_process(str(model_path), str(out_path), skip_symbolic_shape=True)
    model, pads = fuse_pad_into_conv(onnx.load(str(out_path)))
    onnx.save(model, str(out_path))
    return {"pads_folded": pads}


def _calibration_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in methods:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {name!r}")
    return methods[name]


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence two kinds of noise ``quantize_static`` prints on a healthy run: onnxruntime's
    'Removing initializer' warnings from its calibration session, and one root-logger warning
    per rank-1 weight saying per-channel scales do not apply to it (they are per-tensor then)."""
    import onnxruntime as ort

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Axis ") and "is out-of-range for weight" in message)

    root = logging.getLogger()
    root.addFilter(keep)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)
        root.removeFilter(keep)


def quantize_onnx(
    fp32_path: Path | str,
    out_path: Path | str,
    calibration: CalibrationSet,
    variant: OrtVariant,
    per_channel: bool = True,
    calibration_method: str = "minmax",
    exclude_nodes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write the INT8 Q/DQ model of ``variant`` for ``fp32_path`` to ``out_path`` (atomically).

    Returns a description for the model's sidecar (recipe, rewrites, calibration, seconds).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise OnnxQuantizationError(f"{fp32_path}: FP32 ONNX model not found (run the export stage first)")
    started = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.stem}.tmp-", dir=out_path.parent) as tmp_dir:
        work = Path(tmp_dir)
        prepared = work / "prepared.onnx"
        try:
            rewrites = preprocess(fp32_path, prepared)
            model = onnx.load(str(prepared))
            if variant.subpixel_upsampling:
                model, rewrites["convtranspose_to_subpixel"] = convtranspose_to_subpixel(model)
            if variant.shifted_sum_classifier:
                model, rewrites["narrow_conv_to_shifted_sum"] = narrow_conv_to_shifted_sum(model)
            onnx.save(model, str(prepared))
            nodes_to_exclude = list(exclude_nodes) + float_nodes(model, variant.float_scopes, fp32_path)
            staged = work / "int8.onnx"
            with _quiet_quantizer():
                quantize_static(
                    str(prepared),
                    str(staged),
                    calibration.onnx_reader(batch_size=1),
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    reduce_range=variant.reduce_range,
                    activation_type=QuantType.QUInt8 if variant.unsigned_activations else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=nodes_to_exclude or None,
                    calibrate_method=_calibration_method(calibration_method),
                    extra_options={
                        "ActivationSymmetric": not variant.unsigned_activations,
                        "WeightSymmetric": True,
                        **variant.extra_options,
                    },
                )
            assert_self_contained(staged)
        except OnnxQuantizationError:
            raise
        except Exception as error:
            raise OnnxQuantizationError(
                f"{fp32_path} -> {out_path}: onnxruntime quantization ({variant.key}) failed: {type(error).__name__}: {error}"
            ) from error
        staged.chmod(0o644)
        os.replace(staged, out_path)
    return {
        "backend": "onnxruntime",
        "variant": variant.key,
        "target": variant.target,
        "format": "onnx-qdq",
        "precision": "int8",
        "activations": "uint8 asymmetric" if variant.unsigned_activations else "int8 symmetric",
        "weights": "int8 symmetric " + ("per-channel" if per_channel else "per-tensor"),
        "reduce_range": variant.reduce_range,
        "calibration_method": calibration_method,
        "float_scopes": list(variant.float_scopes),
        "float_nodes": len(nodes_to_exclude),
        "rewrites": rewrites,
        "source_model": fp32_path.name,
        "seconds": time.perf_counter() - started,
    }


def float_nodes(model: onnx.ModelProto, scopes: tuple[str, ...], source: Path) -> list[str]:
    """Names of the nodes in ``scopes`` (a name prefix, or ``"input"`` for :data:`INPUT_SCOPE`).

    Fails when a scope matches nothing: the names come from the exporter (module paths under the
    export wrapper's ``model``), and a renamed module must not silently quantize what should stay float.
    """
    names: list[str] = []
    for scope in scopes:
        if scope == "input":
            found = [n.name for n in model.graph.node if INPUT_SCOPE.match(n.name)]
        else:
            found = [n.name for n in model.graph.node if n.name.startswith(scope)]
        if not found:
            raise OnnxQuantizationError(
                f"{source}: no node named like {scope!r} to keep in float; was the model exported by inspectops?"
            )
        names += found
    return names


__all__ = [
    "CALIBRATION_METHODS",
    "CPU_VARIANT",
    "TENSORRT_VARIANT",
    "VARIANTS",
    "OnnxQuantizationError",
    "OrtVariant",
    "preprocess",
    "quantize_onnx",
]
