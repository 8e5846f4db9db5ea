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


def train_segment(params: Params) -> dict[str, float]:
    """Train ChangeNet-Segmentation; writes ``models/segment`` and ``metrics/segment_train.json``."""
    from components.training.train_segment import train_segment as train

    return train(params)


def evaluate_segment(params: Params) -> dict[str, float]:
    """Evaluate the best checkpoint; writes ``metrics/segment.json`` and ``plots/segment``."""
    from components.evaluation.evaluate_segment import evaluate_segment as evaluate

    return evaluate(params)


def register_segment(params: Params) -> dict[str, float]:
    """Register the trained model and run the promotion gate (``champion`` alias)."""
    from components.registry import register_segment_model

    return register_segment_model(params)
