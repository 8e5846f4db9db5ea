"""Assemble the deployable bundle of a trained family and save it as an MLflow pyfunc model.

The register stage calls :func:`save_deployable`: from ``artifacts/deploy`` it takes the FP32
ONNX model and its sidecar (parity-checked by the export stage) and the INT8 copy the quantize
stage judged within tolerance (the x86-tuned one first, then the symmetric QDQ one), writes
them as a bundle (:mod:`components.serving.runtime` reads it) with the model card, and saves an
MLflow pyfunc model around it (:mod:`components.serving.pyfunc_model`) with an input example
from the val split, the signature that example gives, and pip requirements without torch.

The runtime code shipped with the model is the short list :data:`RUNTIME_FILES`: modules that
import no torch. A test loads the registered model with torch made unimportable.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.serving.runtime import MANIFEST, SERVED_FAMILIES, input_columns

if TYPE_CHECKING:
    from components.config import Params
    from components.models.family import ModelFamily

__all__ = [
    "BUNDLE_FORMAT",
    "INT8_VARIANTS",
    "PIP_REQUIREMENTS",
    "RUNTIME_FILES",
    "chosen_int8",
    "save_deployable",
    "serves",
    "write_bundle",
]

BUNDLE_FORMAT = "inspectops-bundle/1"
INT8_VARIANTS: tuple[tuple[str, str], ...] = (("onnxruntime_cpu", "int8_cpu.onnx"), ("onnxruntime", "int8_qdq.onnx"))
"""Quantize-stage variants a bundle may carry, in order of preference on a CPU: ``(metrics key, file suffix)``."""
PIP_REQUIREMENTS = ("mlflow", "onnxruntime", "numpy", "pandas", "pillow")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_FILES: tuple[str, ...] = (
    "__init__.py",
    "serving/__init__.py",
    "serving/onnx_session.py",
    "serving/runtime.py",
    "models/__init__.py",
    "models/changenet/__init__.py",
    "models/changenet/image_score.py",
    "models/cam/__init__.py",
    "models/cam/heatmap.py",
    "data/__init__.py",
    "data/coco.py",
)
"""The files of ``components/`` a served model needs, none of which imports torch."""


def serves(family: ModelFamily) -> bool:
    """Whether ``family`` ships a deployable bundle (it judges parts: segment, classify, CAM)."""
    return family.name in SERVED_FAMILIES and hasattr(family, "serving_example")


def chosen_int8(params: Params, family: ModelFamily) -> tuple[str, Path] | None:
    """The INT8 copy a bundle carries: the first of :data:`INT8_VARIANTS` that exists and passed the gate."""
    from components.export.stage import deploy_path, quantize_metrics_path

    path = quantize_metrics_path(params, family)
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    for key, suffix in INT8_VARIANTS:
        model = deploy_path(params, family, suffix)
        if model.is_file() and metrics.get(f"quantize/{key}/within_tolerance") == 1.0:
            return key, model
    return None


CardSource = str | Callable[[dict[str, Any]], str]
"""The card's Markdown, or a function of the bundle's manifest that renders it."""


def write_bundle(params: Params, family: ModelFamily, folder: Path, card: CardSource = "") -> Path:
    """The bundle folder of ``family``'s exported models (see the module docstring); returns ``folder``."""
    from components.export.onnx_export import read_sidecar
    from components.export.stage import fp32_onnx_path, quantize_metrics_path

    fp32 = fp32_onnx_path(params, family)
    sidecar = read_sidecar(fp32)  # raises naming the file when the export stage has not run
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(fp32, folder / "model_fp32.onnx")
    int8 = chosen_int8(params, family)
    if int8 is not None:
        shutil.copy2(int8[1], folder / "model_int8.onnx")
    quantize_path = quantize_metrics_path(params, family)
    quantize = json.loads(quantize_path.read_text()) if quantize_path.is_file() else {}
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "family": family.name,
        "title": family.title,
        "registered_model": family.registered_model(params),
        "models": {"fp32": "model_fp32.onnx", "int8": "model_int8.onnx" if int8 else None},
        "int8_variant": int8[0] if int8 else None,
        "int8_drop": quantize.get(f"quantize/{int8[0]}/iou_drop") if int8 else None,
        "gate_metric": family.gate_metric,
        "sidecar": sidecar,
        "lighting_conditions": sidecar.get("lighting_conditions") or list(params.data.lighting_conditions),
    }
    manifest["input_columns"] = input_columns(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (folder / "card.md").write_text(card(manifest) if callable(card) else card)
    return folder


def _runtime_code(folder: Path) -> Path:
    """A ``components`` package holding only :data:`RUNTIME_FILES`, for the model's ``code/``."""
    root = folder / "components"
    for name in RUNTIME_FILES:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_ROOT / name, target)
    return root


def _example(params: Params, family: ModelFamily, columns: list[str]) -> Any:
    """One val part as the model takes it: a one-row DataFrame of base64 image bytes."""
    import pandas as pd

    files: dict[str, Path] = family.serving_example(params)  # type: ignore[attr-defined]
    missing = [c for c in columns if c not in files]
    if missing:
        raise ValueError(f"{family.name}: the serving example lacks column(s) {missing}")
    return pd.DataFrame([{c: base64.b64encode(files[c].read_bytes()).decode("ascii") for c in columns}])


def save_deployable(params: Params, family: ModelFamily, out: Path, card: CardSource = "") -> Path:
    """Save the pyfunc model (bundle, runtime code, signature, example) at ``out``; returns ``out``.

    ``out`` must not exist (MLflow's rule); the caller logs the folder to the training run.
    """
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from components.serving.runtime import DeployBundle, prediction_frame

    with tempfile.TemporaryDirectory(prefix="inspectops-bundle-") as tmp:
        bundle = write_bundle(params, family, Path(tmp) / "bundle", card)
        code = _runtime_code(Path(tmp) / "code")
        manifest = json.loads((bundle / MANIFEST).read_text())
        example = _example(params, family, manifest["input_columns"])
        answer = prediction_frame(DeployBundle(bundle, precision="fp32"), example)
        mlflow.pyfunc.save_model(
            str(out),
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(code)],
            signature=infer_signature(example, answer),
            input_example=example,
            pip_requirements=list(PIP_REQUIREMENTS),
            metadata={"inspectops_family": family.name, "bundle_format": BUNDLE_FORMAT},
        )
    return out
