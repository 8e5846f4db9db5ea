"""Train Visual ChangeNet-Segmentation with Lightning, tracked as one MLflow run.

Outputs (``<artifacts>/models/segment``): ``best.ckpt`` (highest val change-IoU) and
``last.ckpt``. They are written to a staging folder and moved into place only when
training finishes, so a crash never leaves a half-trained "best" behind. The folder is a
DVC output and holds only what the inputs determine: no run ids, no absolute paths, so
the same data and params hash the same on every machine. The MLflow run that trained the
model (the one evaluate, export and register attach to) is recorded beside, in
``<artifacts>/runs/segment_model.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import MLFlowLogger

from components.config import Params
from components.fsutil import write_json
from components.tracking import ensure_experiment, flatten, git_commit, run_tags, tracking_uri
from components.training.segment_data import SegmentDataModule
from components.training.segment_module import MONITOR, ChangeSegmentModule


def model_dir(params: Params) -> Path:
    return params.paths.artifacts_dir / "models" / "segment"


def training_run_path(params: Params) -> Path:
    """``<artifacts>/runs/segment_model.json``: the MLflow run of the model in :func:`model_dir`."""
    return params.paths.artifacts_dir / "runs" / "segment_model.json"


def training_run(params: Params) -> dict[str, Any]:
    """The MLflow run record of the current trained model; ``{}`` if absent.

    The one reader of that file: evaluate, export and register attach their results to this run.
    """
    path = training_run_path(params)
    return json.loads(path.read_text()) if path.is_file() else {}


class EpochReport(Callback):
    """One line per epoch on the console (and so in Prefect's logs): the numbers a person waits for."""

    KEYS = ("train/loss_epoch", "val/loss", "val/iou", "val/f1", "val/precision", "val/recall")

    def __init__(self) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        shown = "  ".join(f"{key} {float(logged[key]):.4f}" for key in self.KEYS if key in logged)
        line = (
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  "
            f"({time.perf_counter() - self._started:.0f} s)"
        )
        bar = trainer.progress_bar_callback
        (bar.print if bar is not None else print)(line)  # type: ignore[attr-defined]


class PortableModelCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose saved state names files, not absolute paths.

    Lightning stores the checkpoint folder's absolute path (and the best/last file paths)
    in every checkpoint; two clones training the same model would write different bytes
    and DVC would see a new model each time. Here the state holds file names, and a resumed
    run re-roots them in its own folder, so resuming keeps the best score as before.
    """

    _PATH_FIELDS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["dirpath"] = ""
        for field in self._PATH_FIELDS:
            state[field] = Path(state[field]).name if state.get(field) else state.get(field, "")
        state["best_k_models"] = {Path(path).name: score for path, score in state.get("best_k_models", {}).items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath") == "" and self.dirpath:
            root = Path(self.dirpath)
            state_dict = {**state_dict, "dirpath": self.dirpath}
            for field in self._PATH_FIELDS:
                if state_dict.get(field):
                    state_dict[field] = str(root / state_dict[field])
            state_dict["best_k_models"] = {
                str(root / name): v for name, v in state_dict.get("best_k_models", {}).items()
            }
        super().load_state_dict(state_dict)


class ThroughputMeter(Callback):
    """Counts training pairs per second of training-step time (data loading included)."""

    def __init__(self) -> None:
        self.pairs = 0
        self.seconds = 0.0
        self._started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.pairs += int(batch["mask"].shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seconds += time.perf_counter() - self._started

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


def build_trainer(params: Params, checkpoint_dir: Path, logger: Any, meter: ThroughputMeter) -> L.Trainer:
    t = params.segment.train
    callbacks: list[Callback] = [
        PortableModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=MONITOR, mode="max", save_last=True),
        LearningRateMonitor(logging_interval="epoch"),
        meter,
        EpochReport(),
        # tqdm, not Lightning's default rich bar: rich draws nothing until the end when its
        # output is a pipe (a pipeline stage under DVC), tqdm's redraws stream through.
        TQDMProgressBar(),
    ]
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=t.early_stopping_patience))
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    return L.Trainer(
        max_epochs=t.epochs,
        max_time={"minutes": t.max_minutes} if t.max_minutes else None,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=1,
        deterministic=True if on_cpu else "warn",
        limit_train_batches=t.limit_train_batches,
        gradient_clip_val=t.grad_clip_norm,
        default_root_dir=str(checkpoint_dir),
        enable_model_summary=False,
    )


def _quiet_lightning() -> None:
    """Drop Lightning's advertisement for its cloud logger and a deprecation inside Lightning itself:
    neither is actionable for a user, and a healthy run should print only what matters."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(lambda record: "Tip: For seamless cloud" not in record.getMessage())


def train_segment(params: Params) -> dict[str, float]:
    """Fit the model on ``datasets/segment`` train, choose the checkpoint on val change-IoU."""
    _quiet_lightning()
    L.seed_everything(params.seed, workers=True)
    t = params.segment.train
    datamodule = SegmentDataModule(
        root=params.datasets_dir,
        batch_size=t.batch_size,
        num_workers=t.num_workers,
        augment=t.augment,
        seed=params.seed,
        eval_batch_size=params.segment.eval.batch_size,
    )
    module = ChangeSegmentModule(
        model=params.segment.model.model_dump(mode="json"),
        train=t.model_dump(mode="json"),
        threshold=params.segment.eval.threshold,
    )
    out_dir = model_dir(params)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    import mlflow

    active = mlflow.active_run()  # the stage's run when started by the pipeline runner
    ensure_experiment(params)  # artifacts beside the SQLite store, not in ./mlruns
    logger = MLFlowLogger(
        experiment_name=params.tracking.experiment,
        tracking_uri=tracking_uri(params),
        run_name="train-segment",
        tags=None if active else {**run_tags(params), "stage": "train", "model": "changenet-segment"},
        run_id=active.info.run_id if active else None,
    )
    meter = ThroughputMeter()
    trainer = build_trainer(params, staging, logger, meter)
    if trainer.is_global_zero:
        shutil.rmtree(staging, ignore_errors=True)
        logger.log_hyperparams(
            {
                k: v
                for k, v in flatten(params.model_dump(mode="json")).items()
                if k.startswith(("seed", "data.", "segment."))
            }
        )
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(t.resume_from) if t.resume_from else None)
    except BaseException:
        if trainer.is_global_zero:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    checkpoint = trainer.checkpoint_callback
    assert isinstance(checkpoint, ModelCheckpoint)
    best_score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
    # What DVC compares (a git-tracked metrics file): only what the inputs reproduce.
    reproducible = {"train/best_val_iou": best_score, "train/epochs": float(trainer.current_epoch)}
    # Timings too, for MLflow and the run record.
    metrics = {**reproducible, "train/seconds": seconds, "train/pairs_per_second": meter.pairs_per_second}
    if not trainer.is_global_zero:
        return metrics
    if not (staging / "best.ckpt").exists():  # no val epoch finished (e.g. resumed at max_epochs)
        shutil.copy2(staging / "last.ckpt", staging / "best.ckpt")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    run = {
        "run_id": logger.run_id,
        "experiment_id": logger.experiment_id,
        "tracking_uri": tracking_uri(params),
        "best_checkpoint": str(out_dir / "best.ckpt"),
        "best_val_iou": best_score,
        "git_commit": git_commit(),
    }
    write_json(training_run_path(params), run)
    _log_model(logger, tracking_uri(params), out_dir, metrics)
    write_json(params.metrics_dir / "segment_train.json", reproducible)
    return metrics


def _log_model(logger: MLFlowLogger, uri: str, out_dir: Path, metrics: dict[str, float]) -> None:
    """Attach the best checkpoint and the model itself to the training run."""
    import mlflow

    client = logger.experiment
    run_id = logger.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.log_artifact(run_id, str(out_dir / "best.ckpt"), artifact_path="checkpoints")
    from components.training.segment_module import load_module

    best = load_module(out_dir / "best.ckpt").model
    mlflow.set_tracking_uri(uri)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.pytorch.log_model(best, name="model", serialization_format="pickle", pip_requirements=["torch", "timm"])
        return
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(best, name="model", serialization_format="pickle", pip_requirements=["torch", "timm"])
