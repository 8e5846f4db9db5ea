"""Stage bodies of the deploy path for any model family: ``export`` (FP32 ONNX) and ``quantize``.

Both take the validated :class:`~components.config.Params` and a model family, read the family's
best checkpoint, write their models under ``<artifacts>/deploy/`` (each with a ``<model>.json``
sidecar) and their numbers to ``<artifacts>/metrics/<family>_{export,quantize}.json``, and return
the same numbers flat for the pipeline runner to log. They log nothing to MLflow themselves.

Files (``<family>`` is the family's name, e.g. ``segment``):

- ``<family>_fp32.onnx``: the parity-checked FP32 export every ONNX backend starts from;
- ``<family>_int8_qdq.onnx``: onnxruntime S8S8 Q/DQ, shaped for TensorRT (key ``onnxruntime``);
- ``<family>_int8_cpu.onnx``: onnxruntime U8S8 Q/DQ, shaped for onnxruntime on x86 CPUs
  (key ``onnxruntime_cpu``);
- ``<family>_modelopt_int8.onnx`` (or ``_fp8``): ModelOpt Q/DQ for TensorRT (key ``modelopt``);
- ``<family>_torchao_int8wo.pt``: torchao int8 weight-only for PyTorch serving (key ``torchao``).

Every quantized model is judged by the family's own evaluation on val, on the family's gate
metric (``quantize/<key>/<gate>_drop`` beside ``quantize/<key>/iou_drop`` for the registry).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

from components.config import Params
from components.fsutil import write_json
from components.models.family import ModelFamily, best_checkpoint, get_family

_log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("modelopt", "onnxruntime", "torchao")
BACKEND_KEYS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime", "onnxruntime_cpu"),
    "modelopt": ("modelopt",),
    "torchao": ("torchao",),
}
"""Metric key parts each backend writes (``quantize/<key>/...``)."""

FamilyRef = ModelFamily | str


@dataclasses.dataclass(frozen=True)
class _Reference:
    """What every quantized copy is judged against: the FP32 model's gate value and its operating threshold."""

    value: float
    threshold: float | None

    def sidecar(self) -> dict[str, Any]:
        """The fields a quantized model's sidecar records about how it was judged."""
        return {"operating_threshold": self.threshold, "operating_threshold_from": "fp32"}


class DeployStageError(RuntimeError):
    """A deploy stage that cannot run; the message names the missing file or bad value."""


def _family(family: FamilyRef) -> ModelFamily:
    return get_family(family) if isinstance(family, str) else family


def _name(family: FamilyRef) -> str:
    return family if isinstance(family, str) else family.name


def deploy_dir(params: Params) -> Path:
    return params.paths.artifacts_dir / "deploy"


def deploy_path(params: Params, family: FamilyRef, suffix: str) -> Path:
    """``<artifacts>/deploy/<family>_<suffix>``: e.g. ``segment_fp32.onnx``, ``mal_int8_cpu.onnx``."""
    return deploy_dir(params) / f"{_name(family)}_{suffix}"


def fp32_onnx_path(params: Params, family: FamilyRef) -> Path:
    return deploy_path(params, family, "fp32.onnx")


def export_metrics_path(params: Params, family: FamilyRef) -> Path:
    return params.metrics_dir / f"{_name(family)}_export.json"


def quantize_metrics_path(params: Params, family: FamilyRef) -> Path:
    return params.metrics_dir / f"{_name(family)}_quantize.json"


def export_stage(params: Params, family: FamilyRef, checkpoint: Path | None = None) -> dict[str, float]:
    """Export the family's best checkpoint to ``<family>_fp32.onnx`` with a parity check on real val inputs."""
    from components.export.onnx_export import export_onnx

    family = _family(family)
    checkpoint = Path(checkpoint or best_checkpoint(params, family))
    module = family.load_module(checkpoint)
    inputs = family.sample_inputs(params, "val", params.export.parity_samples)
    metrics = export_onnx(
        family.export_module(module, params),
        fp32_onnx_path(params, family),
        params.export,
        inputs,
        family.onnx_input_names,
        family.onnx_output_names(params),
        sidecar_extra={"checkpoint": str(checkpoint), "family": family.name, **family.deploy_metadata(params, module)},
    )
    write_json(export_metrics_path(params, family), metrics)
    return metrics


def quantize_stage(
    params: Params, family: FamilyRef, backend: str | None = None, checkpoint: Path | None = None
) -> dict[str, float]:
    """Quantize with each backend of ``quantize.backends`` (or only ``backend``) and judge each on val.

    Writes ``<artifacts>/metrics/<family>_quantize.json``. When a single ``backend`` is given, the
    other backends' earlier numbers in that file are kept, so backends can be (re)run one at a time.
    """
    family = _family(family)
    backends = (backend,) if backend else tuple(params.quantize.backends)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise DeployStageError(f"unknown quantization backend(s) {unknown}; choose from {list(BACKENDS)}")
    checkpoint = Path(checkpoint or best_checkpoint(params, family))
    module = family.load_module(checkpoint)
    _log.info("evaluating the FP32 model %s on val as the reference", checkpoint)
    from components.quantization.evaluate import evaluate_runner

    threshold = family.operating_threshold(module.model, params)  # every copy is called at the FP32 one
    fp32_value = evaluate_runner(family, module.model, params, threshold=threshold)[family.gate_metric]
    calibration = family.calibration_set(params, params.quantize.calibration_samples)
    metrics: dict[str, float] = {
        f"quantize/fp32/val_{family.gate_metric}": fp32_value,
        "quantize/calibration_samples": float(len(calibration)),
    }
    reference = _Reference(fp32_value, threshold)
    for name in backends:
        _log.info("quantizing with %s", name)
        metrics.update(_RUNNERS[name](params, family, module, calibration, reference))
    # The git-tracked metrics file holds what the inputs reproduce; timings go to MLflow only.
    reproducible = {k: v for k, v in metrics.items() if not k.endswith("/seconds")}
    path = quantize_metrics_path(params, family)
    write_json(path, _merge_previous(path, reproducible, backends if backend else None))
    return metrics


def _merge_previous(path: Path, metrics: dict[str, float], rerun: tuple[str, ...] | None) -> dict[str, Any]:
    """``metrics`` plus the other backends' entries of the existing metrics file (single-backend runs)."""
    fresh = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
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


def _onnx_runner(family: ModelFamily, path: Path, params: Params) -> Any:
    from components.export.runtime import OnnxModel

    outputs = family.onnx_output_names(params)
    return OnnxModel(path, input_names=family.onnx_input_names, primary_output=outputs[-1])


def _run_onnxruntime(
    params: Params, family: ModelFamily, module: Any, calibration: Any, reference: _Reference
) -> dict[str, float]:
    from components.quantization.evaluate import evaluate_runner, record_result
    from components.quantization.onnxruntime_ptq import VARIANTS, quantize_onnx

    fp32_path = fp32_onnx_path(params, family)
    if not fp32_path.is_file():
        raise DeployStageError(f"{fp32_path}: FP32 ONNX model not found; run the export stage first")
    metrics: dict[str, float] = {}
    for recipe in VARIANTS:
        # What stays float is the family's call (ChangeNet: its Siamese backbone; MAL: nothing).
        variant = dataclasses.replace(recipe, float_scopes=family.quantization_float_scopes)
        path = deploy_path(params, family, variant.filename)
        info = quantize_onnx(fp32_path, path, calibration, variant, per_channel=params.quantize.per_channel)
        info.update(calibration_samples=len(calibration), **reference.sidecar())
        val_metrics = evaluate_runner(family, _onnx_runner(family, path, params), params, threshold=reference.threshold)
        metrics.update(
            record_result(
                variant.key, path, info, val_metrics, reference.value, params.quantize.iou_tolerance, family.gate_metric
            )
        )
    return metrics


def _run_modelopt(
    params: Params, family: ModelFamily, module: Any, calibration: Any, reference: _Reference
) -> dict[str, float]:
    from components.quantization.evaluate import evaluate_runner, record_result
    from components.quantization.modelopt_ptq import FILENAMES, quantize_modelopt, runs_in_onnxruntime

    fmt = params.quantize.modelopt_format
    path = deploy_path(params, family, FILENAMES[fmt])
    info = quantize_modelopt(
        family.export_module(module, params),
        path,
        calibration,
        fmt,
        params.quantize.per_channel,
        params.export.opset,
        input_names=family.onnx_input_names,
        output_names=family.onnx_output_names(params),
    )
    info.update(calibration_samples=len(calibration), **reference.sidecar())
    gate = family.gate_metric
    if not runs_in_onnxruntime(fmt):
        reason = f"{fmt} Q/DQ uses TensorRT-only ops (trt::TRT_FP8QuantizeLinear); onnxruntime CPU cannot run it"
        _log.warning("%s: %s; not evaluated", path, reason)
        return record_result(
            "modelopt", path, info, None, reference.value, params.quantize.iou_tolerance, gate, skipped=reason
        )
    val_metrics = evaluate_runner(family, _onnx_runner(family, path, params), params, threshold=reference.threshold)
    return record_result("modelopt", path, info, val_metrics, reference.value, params.quantize.iou_tolerance, gate)


def _run_torchao(
    params: Params, family: ModelFamily, module: Any, calibration: Any, reference: _Reference
) -> dict[str, float]:
    from components.quantization.evaluate import evaluate_runner, record_result
    from components.quantization.torchao_ptq import FILENAME, quantize_torchao

    path = deploy_path(params, family, FILENAME)
    quantized, info = quantize_torchao(module.model, family.model_hparams(module), path, family=family.name)
    info.update(reference.sidecar())
    val_metrics = evaluate_runner(family, quantized, params, threshold=reference.threshold)
    return record_result(
        "torchao", path, info, val_metrics, reference.value, params.quantize.iou_tolerance, family.gate_metric
    )


_RUNNERS = {"onnxruntime": _run_onnxruntime, "modelopt": _run_modelopt, "torchao": _run_torchao}

__all__ = [
    "BACKENDS",
    "BACKEND_KEYS",
    "DeployStageError",
    "deploy_dir",
    "deploy_path",
    "export_metrics_path",
    "export_stage",
    "fp32_onnx_path",
    "quantize_metrics_path",
    "quantize_stage",
]
