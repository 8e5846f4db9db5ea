"""Evaluate a trained ChangeNet-Segmentation checkpoint on a split: metrics file, curves, overlays.

Results go to ``<artifacts>/metrics/segment.json`` (``<split>/<metric>`` keys, fractions
in [0, 1]; DVC tracks it so ``dvc metrics diff`` works), pictures to
``<artifacts>/plots/segment/``, and both into the training's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from components.config import Params
from components.data.formats import DatasetLayout
from components.evaluation.segment_metrics import SegmentationMetrics
from components.evaluation.visualize import overlay
from components.fsutil import atomic_dir, write_json
from components.imageio import write_png
from components.training.segment_data import ChangeSegmentDataset

HEADLINE = (
    "precision",
    "recall",
    "f1",
    "iou",
    "oa",
    "miou",
    "mf1",
    "image_auroc",
    "image_f1",
    "pixel_auroc",
    "pixel_ap",
)


def plots_dir(params: Params) -> Path:
    return params.paths.artifacts_dir / "plots" / "segment"


def overlay_names(names: list[str], count: int) -> list[str]:
    """A fixed, spread-out sample of val images for overlays (same names every run)."""
    if count <= 0 or not names:
        return []
    ordered = sorted(names)
    picks = np.linspace(0, len(ordered) - 1, num=min(count, len(ordered))).round().astype(int)
    return [ordered[i] for i in sorted(set(picks.tolist()))]


@torch.inference_mode()
def evaluate_model(
    model: torch.nn.Module,
    dataset: ChangeSegmentDataset,
    threshold: float,
    batch_size: int,
    num_classes: int = 2,
    keep: set[str] | None = None,
) -> tuple[SegmentationMetrics, dict[str, np.ndarray]]:
    """Run ``model`` over ``dataset``; return the metrics and overlays for the ``keep`` names."""
    model.eval()
    metrics = SegmentationMetrics(num_classes=num_classes, threshold=threshold)
    pictures: dict[str, np.ndarray] = {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in loader:
        logits = model(batch["test"], batch["golden"])
        final = logits[-1] if isinstance(logits, list | tuple) else logits
        prob = torch.softmax(final.float(), dim=1)[:, 1]
        metrics.update(prob, batch["mask"], list(batch["name"]))
        for i, name in enumerate(batch["name"]):
            if keep and name in keep:
                pred = (prob[i] >= threshold).numpy()
                pictures[name] = overlay(batch["golden"][i], batch["test"][i], pred, batch["mask"][i].numpy())
    return metrics, pictures


def evaluate_segment(
    params: Params, checkpoint: Path | None = None, splits: tuple[str, ...] | None = None
) -> dict[str, float]:
    """Evaluate the best checkpoint on val (and test when prepared) and record the results."""
    from components.training.segment_module import load_module
    from components.training.train_segment import model_dir

    layout = DatasetLayout(params.datasets_dir)
    checkpoint = checkpoint or model_dir(params) / "best.ckpt"
    module = load_module(checkpoint)
    if splits is None:
        splits = tuple(s for s in ("val", "test") if layout.segment_list(s).is_file())
    results: dict[str, float] = {}
    with atomic_dir(plots_dir(params)) as staging:
        for split in splits:
            dataset = ChangeSegmentDataset(params.datasets_dir, split, augment=None, seed=params.seed)
            keep = set(overlay_names(dataset.names, params.segment.eval.num_overlays)) if split == "val" else set()
            metrics, pictures = evaluate_model(
                module.model,
                dataset,
                params.segment.eval.threshold,
                params.segment.eval.batch_size,
                params.segment.model.num_classes,
                keep,
            )
            values = metrics.compute()
            results.update({f"{split}/{key}": float(value) for key, value in values.items()})
            metrics.plot_pr_curve(staging / f"{split}_pr_curve.png")
            precision, recall, thresholds = metrics.pr_curve()
            _write_pr_csv(staging / f"{split}_pr_curve.csv", precision, recall, thresholds)
            for name, picture in pictures.items():
                write_png(staging / "overlays" / f"{name}.png", picture)
    clean = {k: (None if v != v else v) for k, v in results.items()}  # JSON has no NaN
    write_json(params.metrics_dir / "segment.json", clean)
    _log_to_training_run(params, checkpoint, results)
    return results


def _write_pr_csv(path: Path, precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray) -> None:
    step = max(1, len(thresholds) // 200)  # a readable curve for `dvc plots`
    rows = ["threshold,precision,recall"]
    rows += [
        f"{t:.4f},{p:.6f},{r:.6f}"
        for t, p, r in zip(thresholds[::step], precision[::step], recall[::step], strict=False)
    ]
    path.write_text("\n".join(rows) + "\n")


def _log_to_training_run(params: Params, checkpoint: Path, results: dict[str, float]) -> None:
    """Add final metrics and pictures to the MLflow run that trained ``checkpoint``."""
    import mlflow

    from components.tracking import tracking_uri
    from components.training.train_segment import model_dir, training_run

    # The pipeline's model: its training run. Any other checkpoint: a run of its own.
    is_pipeline_model = checkpoint.resolve().parent == model_dir(params).resolve()
    run = training_run(params) if is_pipeline_model else {}
    mlflow.set_tracking_uri(run.get("tracking_uri") or tracking_uri(params))
    client = mlflow.MlflowClient()
    run_id = run.get("run_id")
    if run_id is None:
        from components.tracking import ensure_experiment

        run_id = client.create_run(ensure_experiment(params), run_name="evaluate-segment").info.run_id
    for key, value in results.items():
        if value == value:  # skip nan
            client.log_metric(run_id, f"final/{key}", value)
    client.log_artifacts(run_id, str(plots_dir(params)), artifact_path="evaluation")
