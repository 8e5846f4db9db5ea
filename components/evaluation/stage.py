"""The shared evaluate stage: a family's trained model on val (and test), recorded for DVC and MLflow.

The family computes the numbers and draws the pictures (:meth:`ModelFamily.evaluate`); this
stage loads the checkpoint, writes ``<artifacts>/metrics/<family>.json`` (``<split>/<metric>``
keys, fractions in [0, 1]; DVC tracks it so ``dvc metrics diff`` works) and
``<artifacts>/plots/<family>/``, and adds both to the MLflow run that trained the model.
"""

from __future__ import annotations

from pathlib import Path

from components.config import Params
from components.fsutil import atomic_dir, write_json
from components.models.family import ModelFamily, best_checkpoint, get_family, model_dir

SPLITS = ("val", "test")


def plots_dir(params: Params, family: ModelFamily | str) -> Path:
    name = family if isinstance(family, str) else family.name
    return params.paths.artifacts_dir / "plots" / name


def metrics_path(params: Params, family: ModelFamily | str) -> Path:
    """``<artifacts>/metrics/<family>.json``: the family's evaluation, the file the registry gate reads."""
    name = family if isinstance(family, str) else family.name
    return params.metrics_dir / f"{name}.json"


def available_splits(params: Params) -> tuple[str, ...]:
    """val, and test when the prepare stage made one (``data.test_fraction`` > 0 or the source's own test split).

    A split is there when any prepared dataset has it: the segmentation lists, the classify CSVs
    or the image-label lists (a source without masks has no segmentation lists).
    """
    from components.data.formats import DatasetLayout

    layout = DatasetLayout(params.datasets_dir)
    files = (layout.segment_list, layout.classify_csv, layout.image_labels_csv)
    return tuple(s for s in SPLITS if any(path(s).is_file() for path in files))


def evaluate_stage(
    params: Params,
    family: ModelFamily | str,
    checkpoint: Path | None = None,
    splits: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Evaluate the best checkpoint of ``family`` on val (and test when prepared) and record the results."""
    family = get_family(family) if isinstance(family, str) else family
    checkpoint = Path(checkpoint or best_checkpoint(params, family))
    module = family.load_module(checkpoint)
    if family.trainer_settings(params).channels_last:  # NHWC: the faster CPU convolutions, as in training
        import torch

        module.to(memory_format=torch.channels_last)
    results: dict[str, float] = {}
    with atomic_dir(plots_dir(params, family)) as staging:
        for split in splits or available_splits(params):
            values = family.evaluate(module.model, params, split, staging)
            results.update({f"{split}/{key}": float(value) for key, value in values.items()})
    clean = {k: (None if v != v else v) for k, v in results.items()}  # JSON has no NaN
    write_json(metrics_path(params, family), clean)
    _log_to_training_run(params, family, checkpoint, results)
    return results


def _log_to_training_run(params: Params, family: ModelFamily, checkpoint: Path, results: dict[str, float]) -> None:
    """Add final metrics and pictures to the MLflow run that trained ``checkpoint``."""
    import mlflow

    from components.tracking import ensure_experiment, tracking_uri
    from components.training.runs import training_run

    # The pipeline's model: its training run. Any other checkpoint: a run of its own.
    is_pipeline_model = checkpoint.resolve().parent == model_dir(params, family).resolve()
    run = training_run(params, family) if is_pipeline_model else {}
    mlflow.set_tracking_uri(run.get("tracking_uri") or tracking_uri(params))
    client = mlflow.MlflowClient()
    run_id = run.get("run_id")
    if run_id is None:
        run_id = client.create_run(ensure_experiment(params), run_name=f"evaluate-{family.name}").info.run_id
    for key, value in results.items():
        if value == value:  # skip nan
            client.log_metric(run_id, f"final/{key}", value)
    client.log_artifacts(run_id, str(plots_dir(params, family)), artifact_path="evaluation")


__all__ = ["available_splits", "evaluate_stage", "metrics_path", "plots_dir"]
