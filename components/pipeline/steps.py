"""Stage bodies: each takes the validated params, does one stage's work and writes its metrics.

The CLI commands and the Prefect tasks both call these, so a stage behaves the same
under ``dvc repro``, ``inspectops ...`` and ``prefect deployment run``.
"""

from __future__ import annotations

from components.config import Params
from components.fsutil import write_json


def synth(params: Params) -> dict[str, float]:
    """Write ``data/synthetic/<category>`` from the params' seed and synthetic section."""
    from components.data.synth import synthesize_category

    out_dir = params.paths.data_dir / "synthetic" / params.data.category
    counts = synthesize_category(out_dir, params.data.category, params.synthetic, params.seed, progress=True)
    return {f"synth/{key}": float(value) for key, value in counts.items()}


def prepare(params: Params) -> dict[str, float]:
    """Build the segmentation, classification and COCO datasets and record their counts."""
    from components.data.prepare import prepare_datasets

    counts = prepare_datasets(params, progress=True)
    if counts.get("segment/boxes_only") and params.segment.train.labels != "mal":
        print(
            f"prepare: {counts['segment/boxes_only']} pair(s) have boxes but no painted mask; they stay out of "
            "segmentation training (segment/list_boxes_only/). MAL can turn their boxes into masks: set "
            "segment.train.labels: mal to train ChangeNet-Segmentation on them (label_mal writes the masks)."
        )
    metrics = {key: float(value) for key, value in counts.items()}
    write_json(params.metrics_dir / "data.json", metrics)
    return metrics


def validate(params: Params) -> dict[str, float]:
    """Run the Great Expectations suites; raise :class:`DataValidationError` when any fails."""
    from components.validation.validate import DataValidationError, format_failures, validate_datasets

    report = validate_datasets(params)
    metrics = {
        "validation/success": float(report.success),
        "validation/failed_expectations": float(len(report.failures)),
    }
    write_json(params.metrics_dir / "validation.json", metrics)
    if not report.success:
        raise DataValidationError(format_failures(report))
    return metrics


def train(params: Params, family: str) -> dict[str, float]:
    """Train a model family; writes ``models/<family>`` and ``metrics/<family>_train.json``.

    A training killed on the same params and inputs resumes from its last finished epoch."""
    from components.pipeline.runner import stage_inputs_key
    from components.pipeline.stages import get_stage
    from components.training.train import train_model

    return train_model(params, family, resume_key=stage_inputs_key(get_stage(f"train_{family}"), params))


def evaluate(params: Params, family: str) -> dict[str, float]:
    """Evaluate the family's best checkpoint; writes ``metrics/<family>.json`` and ``plots/<family>``."""
    from components.evaluation.stage import evaluate_stage

    return evaluate_stage(params, family)


def register(params: Params, family: str) -> dict[str, float]:
    """Register the family's trained model and run the promotion gate (``champion`` alias)."""
    from components.registry import register_model

    return register_model(params, family)


def export(params: Params, family: str) -> dict[str, float]:
    """Export the family's best checkpoint to ONNX (parity-checked) and attach it to the training run."""
    from components.export.stage import export_stage, fp32_onnx_path

    metrics = export_stage(params, family)
    _attach_to_training_run(params, family, fp32_onnx_path(params, family), "onnx")
    return metrics


def quantize(params: Params, family: str) -> dict[str, float]:
    """Quantize with every backend in ``quantize.backends``; each is evaluated on val."""
    from components.export.stage import quantize_stage

    return quantize_stage(params, family)


def benchmark(params: Params, family: str) -> dict[str, float]:
    """Benchmark the family's deployable models on this machine's platform and write the comparison."""
    from components.benchmarking.stage import benchmark_stage

    return benchmark_stage(params, family)


def label_mal(params: Params) -> dict[str, float]:
    """Label the train boxes with the trained MAL: ``labels/mal`` (COCO with RLE, one mask PNG per image)."""
    from components.labeling.pipeline import label_stage

    return label_stage(params)


def label_cam(params: Params) -> dict[str, float]:
    """Box the train images the CAM classifier calls anomalous: ``labels/cam/train.json`` for MAL."""
    from components.labeling.cam_boxes import label_cam_stage

    return label_cam_stage(params)


def _attach_to_training_run(params: Params, family: str, path, artifact_path: str) -> None:  # type: ignore[no-untyped-def]
    """Log a deploy artifact into the training run, where registry model versions point."""
    import mlflow

    from components.training.runs import training_run

    run = training_run(params, family)
    if not run or not path.is_file():
        return
    mlflow.set_tracking_uri(run["tracking_uri"])
    mlflow.MlflowClient().log_artifact(run["run_id"], str(path), artifact_path=artifact_path)
