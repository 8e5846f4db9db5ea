"""Train any model family with Lightning, tracked as one MLflow run: the shared train stage.

The family (:class:`~components.models.family.ModelFamily`) supplies the Lightning module,
the data module, the trainer knobs and the metric that picks the checkpoint; this module
owns everything around them: seeding, checkpoints, progress, MLflow, the run record.

Outputs (``<artifacts>/models/<family>``): ``best.ckpt``, the weights later stages use (highest
``family.monitor`` on val, or the final epoch with ``train.checkpoint: last``), and ``last.ckpt``.
They are written to a staging folder and moved into place only when training finishes, so a
crash never leaves a half-trained "best" behind; a training killed part-way resumes from the
staging folder's last epoch when its params and inputs are unchanged
(:mod:`components.training.resume`). The published folder is a
DVC output and holds only what the inputs determine: no run ids, no absolute paths, so
the same data and params hash the same on every machine. The MLflow run that trained the
model (the one evaluate, export and register attach to) is recorded beside, in
``<artifacts>/runs/<family>_model.json``.
"""

from __future__ import annotations

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
from components.models.family import ModelFamily, TrainerSettings, get_family
from components.models.family import model_dir as family_model_dir
from components.tracking import ensure_experiment, git_commit, run_tags, tracking_uri
from components.training.resume import (
    AtomicCheckpointIO,
    EpochSeeding,
    find_resume_point,
    marker_path,
    write_marker,
)
from components.training.runs import training_run_path

FamilyRef = ModelFamily | str


def _family(family: FamilyRef) -> ModelFamily:
    return get_family(family) if isinstance(family, str) else family


def model_dir(params: Params, family: FamilyRef) -> Path:
    """``<artifacts>/models/<family>``: the train stage's DVC output."""
    return family_model_dir(params, family)


def train_metrics_path(params: Params, family: FamilyRef) -> Path:
    """``<artifacts>/metrics/<family>_train.json``: what DVC compares of a training."""
    name = family if isinstance(family, str) else family.name
    return params.metrics_dir / f"{name}_train.json"


class EpochReport(Callback):
    """One line per epoch on the console (and so in Prefect's logs): the numbers a person waits for."""

    def __init__(self, keys: tuple[str, ...] = ()) -> None:
        self.keys = keys
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        shown = "  ".join(f"{key} {float(logged[key]):.4f}" for key in self.keys if key in logged)
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
        # Lightning leaves the score of the latest save out of its state; kept, a resumed run writes
        # the checkpoint bytes an uninterrupted one would.
        state["current_score"] = self.current_score
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
        if state_dict.get("current_score") is not None:
            self.current_score = state_dict["current_score"]


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the length of its first tensor (dict, tuple or tensor batches)."""
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, list | tuple) else [batch]
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    return 0


class ThroughputMeter(Callback):
    """Counts training samples (pairs, crops) per second of training-step time (data loading included)."""

    def __init__(self) -> None:
        self.pairs = 0
        self.seconds = 0.0
        self._started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.pairs += _batch_size(batch) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seconds += time.perf_counter() - self._started

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


class ChannelsLast(Callback):
    """Put the module's 4-D weights in NHWC order before fitting.

    oneDNN (CPU) and cuDNN's tensor cores convolve NHWC fastest; activations follow the weights'
    layout from the first convolution on, so batches need no change. Runs at ``setup``, before the
    optimizer is built; ``Module.to`` swaps the tensors inside the same ``Parameter`` objects.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)


def trainer_determinism(setting: bool | str, on_cpu: bool) -> bool | str:
    """Lightning's ``deterministic`` for a ``train.deterministic`` setting: ``auto`` is ``True`` on CPU,
    where every op has a deterministic kernel and the same params and data must give the same metrics,
    and ``warn`` on a GPU, where some ops (``nll_loss2d``, bilinear upsampling's backward) have none."""
    if setting == "auto":
        return True if on_cpu else "warn"
    return setting


def build_trainer(
    t: TrainerSettings, monitor: str, checkpoint_dir: Path, logger: Any, meter: ThroughputMeter, seed: int = 0
) -> L.Trainer:
    """The Lightning trainer of the shared train stage; ``seed`` seeds each epoch's global generators."""
    callbacks: list[Callback] = [
        PortableModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=monitor, mode="max"),
        # ``last.ckpt`` from a checkpoint of its own: since Lightning 2.6, ``save_last=True`` writes
        # it only on epochs that also save a new best, so a resume would restart from the best epoch.
        PortableModelCheckpoint(dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1),
        LearningRateMonitor(logging_interval="epoch"),
        meter,
        EpochReport(t.report_keys),
        # tqdm, not Lightning's default rich bar: rich draws nothing until the end when its
        # output is a pipe (a pipeline stage under DVC), tqdm's redraws stream through.
        TQDMProgressBar(),
        EpochSeeding(seed),
    ]
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=t.early_stopping_patience))
    if t.channels_last:
        callbacks.append(ChannelsLast())
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    deterministic = trainer_determinism(t.deterministic, on_cpu)
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
        deterministic=deterministic,
        benchmark=deterministic is False and not on_cpu,  # cuDNN autotuning, only where determinism is off
        limit_train_batches=t.limit_train_batches,
        gradient_clip_val=t.grad_clip_norm,
        default_root_dir=str(checkpoint_dir),
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )


def _quiet_lightning() -> None:
    """Drop Lightning's advertisement for its cloud logger and a deprecation inside Lightning itself:
    neither is actionable for a user, and a healthy run should print only what matters."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(lambda record: "Tip: For seamless cloud" not in record.getMessage())


def train_model(params: Params, family: FamilyRef, resume_key: str | None = None) -> dict[str, float]:
    """Fit ``family``'s model on its train data, keep the checkpoint with the best ``family.monitor``.

    ``resume_key`` (:func:`components.training.resume.inputs_key` of the train stage, which the
    pipeline passes): a training killed with the same key continues from its last finished epoch
    (:mod:`components.training.resume`); ``None`` always starts over.
    """
    family = _family(family)
    _quiet_lightning()
    L.seed_everything(params.training_seed, workers=True)
    settings = family.trainer_settings(params)
    datamodule = family.build_datamodule(params)
    module = family.build_module(params)
    out_dir = model_dir(params, family)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    import mlflow

    active = mlflow.active_run()  # the stage's run when started by the pipeline runner
    ensure_experiment(params)  # artifacts beside the SQLite store, not in ./mlruns
    logger = MLFlowLogger(
        experiment_name=params.tracking.experiment,
        tracking_uri=tracking_uri(params),
        run_name=f"train-{family.name}",
        tags=None if active else {**run_tags(params), "stage": f"train_{family.name}", "model": family.name},
        run_id=active.info.run_id if active else None,
    )
    meter = ThroughputMeter()
    trainer = build_trainer(settings, family.monitor, staging, logger, meter, params.training_seed)
    interrupted, why = find_resume_point(staging, resume_key) if resume_key else (None, "")
    if trainer.is_global_zero:
        if why:
            print(f"train {family.name}: {why}")
        if interrupted is None:
            shutil.rmtree(staging, ignore_errors=True)
        else:
            _quiet_resume()
            if interrupted.run_id and interrupted.run_id != logger.run_id:
                _close_killed_run(logger, interrupted.run_id)
        if resume_key:
            write_marker(staging, resume_key, logger.run_id)
        logger.log_hyperparams(family.hyperparameters(params))
    started = time.perf_counter()
    resume = interrupted.checkpoint if interrupted else settings.resume_from
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    except BaseException:
        # The finished epochs stay for the next start to resume from (with a resume key); a staging
        # folder with nothing to resume is removed.
        if trainer.is_global_zero and not (resume_key and (staging / "last.ckpt").is_file()):
            shutil.rmtree(staging, ignore_errors=True)
            marker_path(staging).unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    checkpoint = trainer.checkpoint_callback
    assert isinstance(checkpoint, ModelCheckpoint)
    best_score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
    best_key = f"train/best_{family.monitor.replace('/', '_')}"
    # What DVC compares (a git-tracked metrics file): only what the inputs reproduce.
    reproducible = {best_key: best_score, "train/epochs": float(trainer.current_epoch)}
    # Timings too, for MLflow and the run record.
    metrics = {**reproducible, "train/seconds": seconds, "train/samples_per_second": meter.pairs_per_second}
    if not trainer.is_global_zero:
        return metrics
    if settings.checkpoint == "last" or not (staging / "best.ckpt").exists():
        # ``last``: the final weights are the model, nothing chosen on val (or no val epoch finished,
        # e.g. resumed at max_epochs); ``best.ckpt`` is the file every later stage reads.
        shutil.copy2(staging / "last.ckpt", staging / "best.ckpt")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    marker_path(staging).unlink(missing_ok=True)
    run = {
        "run_id": logger.run_id,
        "experiment_id": logger.experiment_id,
        "tracking_uri": tracking_uri(params),
        "family": family.name,
        "best_checkpoint": str(out_dir / "best.ckpt"),
        best_key.removeprefix("train/"): best_score,
        "git_commit": git_commit(),
    }
    write_json(training_run_path(params, family), run)
    _log_model(family, logger, tracking_uri(params), out_dir, metrics)
    write_json(train_metrics_path(params, family), reproducible)
    return metrics


def _quiet_resume() -> None:
    """Lightning warns that the checkpoint folder is not empty: on a resume, that is the point."""
    import warnings

    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def _close_killed_run(logger: MLFlowLogger, killed_run_id: str) -> None:
    """Link the resumed training to the run of the killed one, and end that run as ``KILLED``
    (a process killed with ``kill -9`` left it ``RUNNING``)."""
    client = logger.experiment
    client.set_tag(logger.run_id, "resumed_from_run_id", killed_run_id)
    try:
        if client.get_run(killed_run_id).info.status == "RUNNING":
            client.set_terminated(killed_run_id, status="KILLED")
    except Exception as error:  # a run deleted meanwhile, or another tracking store: nothing to close
        print(f"train: could not end the interrupted MLflow run {killed_run_id}: {error}")


def _log_model(family: ModelFamily, logger: MLFlowLogger, uri: str, out_dir: Path, metrics: dict[str, float]) -> None:
    """Attach the best checkpoint and the model itself to the training run."""
    import mlflow

    client = logger.experiment
    run_id = logger.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.log_artifact(run_id, str(out_dir / "best.ckpt"), artifact_path="checkpoints")
    best = family.load_module(out_dir / "best.ckpt").model
    mlflow.set_tracking_uri(uri)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.pytorch.log_model(best, name="model", serialization_format="pickle", pip_requirements=["torch", "timm"])
        return
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(best, name="model", serialization_format="pickle", pip_requirements=["torch", "timm"])
