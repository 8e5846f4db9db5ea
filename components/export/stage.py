"""Stage bodies of the deploy path: ``export`` (FP32 ONNX) and ``quantize`` (INT8/FP8 backends).

Both take the validated :class:`~components.config.Params`, read the best checkpoint of the
training stage, write their models under ``<artifacts>/deploy/`` (each with a ``<model>.json``
sidecar) and their numbers to ``<artifacts>/metrics/{export,quantize}.json``, and return the same
numbers flat for the pipeline runner to log. They log nothing to MLflow themselves.

Files:

- ``segment_fp32.onnx``: the parity-checked FP32 export every ONNX backend starts from;
- ``segment_int8_qdq.onnx``: onnxruntime S8S8 Q/DQ, shaped for TensorRT (key ``onnxruntime``);
- ``segment_int8_cpu.onnx``: onnxruntime U8S8 Q/DQ, shaped for onnxruntime on x86 CPUs
  (key ``onnxruntime_cpu``);
- ``segment_modelopt_int8.onnx`` (or ``_fp8``): ModelOpt Q/DQ for TensorRT (key ``modelopt``);
- ``segment_torchao_int8wo.pt``: torchao int8 weight-only for PyTorch serving (key ``torchao``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from components.config import Params
from components.fsutil import write_json

_log = logging.getLogger(__name__)

FP32_ONNX = "segment_fp32.onnx"
BACKENDS: tuple[str, ...] = ("modelopt", "onnxruntime", "torchao")
BACKEND_KEYS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime", "onnxruntime_cpu"),
    "modelopt": ("modelopt",),
    "torchao": ("torchao",),
}
"""Metric key parts each backend writes (``quantize/<key>/...``)."""


class DeployStageError(RuntimeError):
    """A deploy stage that cannot run; the message names the missing file or bad value."""


def deploy_dir(params: Params) -> Path:
    return params.paths.artifacts_dir / "deploy"


def checkpoint_path(params: Params) -> Path:
    from components.training.train_segment import model_dir

    return model_dir(params) / "best.ckpt"


def _val_dataset(params: Params) -> Any:
    from components.training.segment_data import ChangeSegmentDataset

    return ChangeSegmentDataset(params.datasets_dir, "val", augment=None, seed=params.seed)


def export_stage(params: Params, checkpoint: Path | None = None) -> dict[str, float]:
    """Export the best checkpoint to ``<artifacts>/deploy/segment_fp32.onnx`` with a parity check."""
    from components.export.onnx_export import export_segment_onnx, parity_pairs_from_dataset
    from components.training.segment_module import load_module

    checkpoint = Path(checkpoint or checkpoint_path(params))
    module = load_module(checkpoint)
    test, golden = parity_pairs_from_dataset(_val_dataset(params), params.export.parity_samples)
    image_size = (int(test.shape[-2]), int(test.shape[-1]))
    metrics = export_segment_onnx(
        module.model,
        deploy_dir(params) / FP32_ONNX,
        params.export,
        image_size,
        (test, golden),
        sidecar_extra={"checkpoint": str(checkpoint), "threshold": params.segment.eval.threshold},
    )
    write_json(params.metrics_dir / "export.json", metrics)
    return metrics


def quantize_stage(params: Params, backend: str | None = None, checkpoint: Path | None = None) -> dict[str, float]:
    """Quantize with each backend of ``quantize.backends`` (or only ``backend``) and judge each on val.

    Writes ``<artifacts>/metrics/quantize.json``. When a single ``backend`` is given, the other
    backends' earlier numbers in that file are kept, so backends can be (re)run one at a time.
    """
    from components.quantization.calibration import CalibrationSet
    from components.quantization.evaluate import evaluate_runner
    from components.training.segment_module import load_module

    backends = (backend,) if backend else tuple(params.quantize.backends)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise DeployStageError(f"unknown quantization backend(s) {unknown}; choose from {list(BACKENDS)}")
    checkpoint = Path(checkpoint or checkpoint_path(params))
    module = load_module(checkpoint)
    val = _val_dataset(params)
    _log.info("evaluating the FP32 model %s on val (%d pairs) as the reference", checkpoint, len(val))
    fp32_iou = evaluate_runner(module.model, val, params)["iou"]
    calibration = CalibrationSet(params.datasets_dir, params.quantize.calibration_samples, params.seed)
    metrics: dict[str, float] = {
        "quantize/fp32/val_iou": fp32_iou,
        "quantize/calibration_samples": float(len(calibration)),
    }
    for name in backends:
        _log.info("quantizing with %s", name)
        metrics.update(_RUNNERS[name](params, module, calibration, val, fp32_iou))
    # The git-tracked metrics file holds what the inputs reproduce; timings go to MLflow only.
    reproducible = {k: v for k, v in metrics.items() if not k.endswith("/seconds")}
    write_json(
        params.metrics_dir / "quantize.json", _merge_previous(params, reproducible, backends if backend else None)
    )
    return metrics


def _merge_previous(params: Params, metrics: dict[str, float], rerun: tuple[str, ...] | None) -> dict[str, Any]:
    """``metrics`` plus the other backends' entries of the existing quantize.json (single-backend runs)."""
    fresh = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    path = params.metrics_dir / "quantize.json"
    if rerun is None or not path.is_file():
        return fresh
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError:
        _log.warning("%s: unreadable, rewriting it", path)
        return fresh
    replaced = {f"quantize/{key}/" for b in rerun for key in BACKEND_KEYS[b]}
    kept = {k: v for k, v in previous.items() if not any(k.startswith(p) for p in replaced) and k not in fresh}
    return {**kept, **fresh}


def _run_onnxruntime(params: Params, module: Any, calibration: Any, val: Any, fp32_iou: float) -> dict[str, float]:
    from components.export.runtime import OnnxSegmentModel
    from components.quantization.evaluate import evaluate_runner, record_result
    from components.quantization.onnxruntime_ptq import VARIANTS, quantize_onnx

    fp32_path = deploy_dir(params) / FP32_ONNX
    if not fp32_path.is_file():
        raise DeployStageError(f"{fp32_path}: FP32 ONNX model not found; run the export stage first")
    metrics: dict[str, float] = {}
    for variant in VARIANTS:
        path = deploy_dir(params) / variant.filename
        info = quantize_onnx(fp32_path, path, calibration, variant, per_channel=params.quantize.per_channel)
        info["calibration_samples"] = len(calibration)
        val_metrics = evaluate_runner(OnnxSegmentModel(path), val, params)
        metrics.update(record_result(variant.key, path, info, val_metrics, fp32_iou, params.quantize.iou_tolerance))
    return metrics


def _run_modelopt(params: Params, module: Any, calibration: Any, val: Any, fp32_iou: float) -> dict[str, float]:
    from components.export.runtime import OnnxSegmentModel
    from components.quantization.evaluate import evaluate_runner, record_result
    from components.quantization.modelopt_ptq import FILENAMES, quantize_modelopt, runs_in_onnxruntime

    fmt = params.quantize.modelopt_format
    path = deploy_dir(params) / FILENAMES[fmt]
    info = quantize_modelopt(module.model, path, calibration, fmt, params.quantize.per_channel, params.export.opset)
    info["calibration_samples"] = len(calibration)
    if not runs_in_onnxruntime(fmt):
        reason = f"{fmt} Q/DQ uses TensorRT-only ops (trt::TRT_FP8QuantizeLinear); onnxruntime CPU cannot run it"
        _log.warning("%s: %s; not evaluated", path, reason)
        return record_result("modelopt", path, info, None, fp32_iou, params.quantize.iou_tolerance, skipped=reason)
    val_metrics = evaluate_runner(OnnxSegmentModel(path), val, params)
    return record_result("modelopt", path, info, val_metrics, fp32_iou, params.quantize.iou_tolerance)


def _run_torchao(params: Params, module: Any, calibration: Any, val: Any, fp32_iou: float) -> dict[str, float]:
    from components.quantization.evaluate import evaluate_runner, record_result
    from components.quantization.torchao_ptq import FILENAME, quantize_torchao

    path = deploy_dir(params) / FILENAME
    quantized, info = quantize_torchao(module.model, dict(module.hparams["model"]), path)
    val_metrics = evaluate_runner(quantized, val, params)
    return record_result("torchao", path, info, val_metrics, fp32_iou, params.quantize.iou_tolerance)


_RUNNERS = {"onnxruntime": _run_onnxruntime, "modelopt": _run_modelopt, "torchao": _run_torchao}

__all__ = ["BACKENDS", "BACKEND_KEYS", "FP32_ONNX", "DeployStageError", "deploy_dir", "export_stage", "quantize_stage"]
