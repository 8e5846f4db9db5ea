"""Judge a quantized model: val metrics with the FP32 model's own code, gate-metric drop, promotion flag.

Every quantized model, whatever runs it (onnxruntime session, torchao module), goes through
its family's :meth:`~components.models.family.ModelFamily.evaluate`, the function that measured
the FP32 checkpoint, on the same val split and at the FP32 model's operating threshold (the one a
deployment reads from the sidecar; it is chosen once, on train, not again for every copy). So the
reported drop is the quantization's alone. A model losing more than ``quantize.iou_tolerance`` of the family's gate metric (ChangeNet: change-IoU; MAL: mIoU) is marked not promotable
in its sidecar (``<model>.json``, key ``promotable``) and in the metrics
(``quantize/<backend>/within_tolerance`` = 0); the registry must not promote it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from components.config import Params
from components.export.onnx_export import sidecar_path
from components.fsutil import write_json
from components.models.family import ModelFamily

REPORTED = ("iou", "f1", "precision", "recall", "miou", "image_auroc", "pixel_ap")
"""Val metrics copied into ``quantize.json`` per backend (the sidecar holds all of them)."""


def evaluate_runner(
    family: ModelFamily, runner: Any, params: Params, split: str = "val", threshold: float | None = None
) -> dict[str, float]:
    """All ``split`` metrics of ``runner`` (the model, or any callable with its signature and ``eval()``).

    ``threshold``: the operating threshold to call images at (the FP32 model's: the one that ships).
    """
    values = family.evaluate(runner, params, split, None, threshold)
    return {key: float(value) for key, value in values.items()}


def judge(quantized_iou: float, fp32_iou: float, tolerance: float) -> tuple[float, bool]:
    """``(iou drop, within tolerance)``; a nan IoU on either side is never within tolerance."""
    drop = fp32_iou - quantized_iou
    if math.isnan(drop):
        return drop, False
    return drop, drop <= tolerance + 1e-12


def record_result(
    key: str,
    model_path: Path,
    info: dict[str, Any],
    val_metrics: dict[str, float] | None,
    fp32_value: float,
    tolerance: float,
    gate: str = "iou",
    skipped: str | None = None,
) -> dict[str, float]:
    """Write ``<model>.json`` with the verdict and return the ``quantize/<key>/...`` metrics.

    ``gate``: the family's gate metric; its drop from ``fp32_value`` is judged against ``tolerance``
    and recorded as ``quantize/<key>/iou_drop`` whatever the metric, the key the registry reads.
    ``skipped``: why the model could not be evaluated here (e.g. FP8 on a CPU). It then gets no
    numbers at all, never invented ones, and is not promotable.
    """
    prefix = f"quantize/{key}"
    size_mb = model_path.stat().st_size / 1e6 if model_path.is_file() else math.nan
    metrics: dict[str, float] = {
        f"{prefix}/size_mb": size_mb,
        f"{prefix}/seconds": float(info.get("seconds", math.nan)),
    }
    sidecar: dict[str, Any] = {
        **info,
        "model": model_path.name,
        "gate_metric": gate,
        f"fp32_val_{gate}": _json_float(fp32_value),
        "iou_tolerance": tolerance,
        "size_mb": _json_float(size_mb),
    }
    if val_metrics is None:
        sidecar.update({"evaluated": False, "skipped_reason": skipped, "within_tolerance": False, "promotable": False})
        metrics[f"{prefix}/evaluated"] = 0.0
        metrics[f"{prefix}/within_tolerance"] = 0.0
    else:
        drop, within = judge(val_metrics.get(gate, math.nan), fp32_value, tolerance)
        sidecar.update(
            {
                "evaluated": True,
                "val": {k: _json_float(v) for k, v in val_metrics.items()},
                "iou_drop": _json_float(drop),
                "within_tolerance": within,
                "promotable": within,
            }
        )
        metrics[f"{prefix}/evaluated"] = 1.0
        metrics.update({f"{prefix}/val_{k}": val_metrics[k] for k in (gate, *REPORTED) if k in val_metrics})
        metrics[f"{prefix}/iou_drop"] = drop
        metrics[f"{prefix}/within_tolerance"] = float(within)
    write_json(sidecar_path(model_path), sidecar)
    return metrics


def _json_float(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


__all__ = ["REPORTED", "evaluate_runner", "judge", "record_result"]
