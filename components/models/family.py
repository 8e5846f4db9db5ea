"""The model-family interface: what the shared stages need to know about a model, and nothing more.

Train, evaluate, export, quantize, benchmark and register are written once
(``components/training``, ``components/evaluation``, ``components/export``, ``components/quantization``,
``components/benchmarking``, ``components/registry.py``) and take a :class:`ModelFamily`. Each family
lives in one folder under ``components/models/<family>/`` (its torch model, Lightning module,
dataset, metrics and a ``family.py`` implementing this protocol), in the spirit of anomalib's
one-folder-per-model layout. Adding a model means adding a folder and one line to
:data:`FAMILY_MODULES`, never an ``if model == ...`` in a stage.

A family answers four questions for the stages:

- *what the inputs are*: :attr:`ModelFamily.onnx_input_names`, :meth:`ModelFamily.sample_inputs`
  (real val samples, stacked, for the export parity check) and :meth:`ModelFamily.calibration_set`
  (a seeded draw of train samples for quantization);
- *how to train*: :meth:`ModelFamily.build_module`, :meth:`ModelFamily.build_datamodule`,
  :meth:`ModelFamily.trainer_settings`, :attr:`ModelFamily.monitor`;
- *how to judge*: :meth:`ModelFamily.evaluate` (any callable with the model's signature: the torch
  model, an onnxruntime session, a quantized model), :meth:`ModelFamily.operating_threshold` (the
  decision threshold a model ships with) and :attr:`ModelFamily.gate_metric`, the metric that
  decides promotion in the registry and the quantization drop;
- *what to deploy*: :meth:`ModelFamily.export_module`, :meth:`ModelFamily.onnx_output_names`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import lightning as L
    import torch
    from torch import nn

    from components.config import Params, TrainLoopParams
    from components.quantization.calibration import CalibrationSet


@dataclass(frozen=True)
class TrainerSettings:
    """The Lightning ``Trainer`` knobs a family's params decide (the shared train stage builds the trainer)."""

    epochs: int
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    max_minutes: float | None = None
    limit_train_batches: float | int | None = None
    grad_clip_norm: float | None = None
    early_stopping_patience: int | None = None
    checkpoint: str = "best"
    """``best`` (highest ``monitor`` on val) or ``last`` (the final epoch): what ``best.ckpt`` holds."""
    resume_from: Path | None = None
    report_keys: tuple[str, ...] = ()
    """Logged values the one-line-per-epoch report shows."""
    channels_last: bool = False
    """Convert the module to NHWC before fitting (faster convolutions on CPU and tensor cores)."""
    deterministic: bool | str = "auto"
    """``auto`` (``True`` on CPU, ``warn`` on a GPU), ``warn``, ``True`` or ``False`` (cuDNN autotuning)."""

    @classmethod
    def from_train_params(cls, t: TrainLoopParams, report_keys: tuple[str, ...] = ()) -> TrainerSettings:
        """The settings of a ``train`` section built on :class:`~components.config.TrainLoopParams`."""
        return cls(
            epochs=t.epochs,
            precision=t.precision,
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
            max_minutes=t.max_minutes,
            limit_train_batches=t.limit_train_batches,
            grad_clip_norm=t.grad_clip_norm,
            early_stopping_patience=t.early_stopping_patience,
            checkpoint=t.checkpoint,
            resume_from=t.resume_from,
            report_keys=report_keys,
            channels_last=t.channels_last,
            deterministic=t.deterministic,
        )


@runtime_checkable
class ModelFamily(Protocol):
    """One model family, as the shared stages see it (see the module docstring)."""

    name: str
    """Short key: ``models/<name>``, ``metrics/<name>.json``, ``deploy/<name>_fp32.onnx``, CLI ``train <name>``."""
    title: str
    """For people: run names, logs, READMEs."""
    monitor: str
    """Logged val metric that picks the best checkpoint (higher is better)."""
    gate_metric: str
    """Metric name (without split) that gates promotion and judges quantization drops, e.g. ``iou``."""
    gate_label: str
    """The gate metric for people (registry reasons), e.g. ``change-IoU``."""
    onnx_input_names: tuple[str, ...]
    quantization_float_scopes: tuple[str, ...]
    """ONNX node scopes INT8 post-training quantization keeps in float (see ``onnxruntime_ptq``)."""

    def onnx_output_names(self, params: Params) -> tuple[str, ...]:
        """The deployed graph's outputs; the last is the primary one parity and evaluation read."""
        ...

    def deploy_metadata(self, params: Params, module: L.LightningModule | None = None) -> dict[str, Any]:
        """Extra fields for the exported model's sidecar (e.g. the decision threshold of ``module``)."""
        ...

    def model_hparams(self, module: L.LightningModule) -> dict[str, Any]:
        """What :meth:`build_model` needs to rebuild ``module``'s network (stored with quantized models)."""
        ...

    def trainer_settings(self, params: Params) -> TrainerSettings: ...

    def hyperparameters(self, params: Params) -> dict[str, Any]:
        """Flat params logged to the training run."""
        ...

    def build_module(self, params: Params) -> L.LightningModule: ...

    def build_model(self, model_hparams: dict[str, Any]) -> nn.Module:
        """The bare torch architecture from its stored model section, without pretrained weights."""
        ...

    def build_datamodule(self, params: Params) -> L.LightningDataModule: ...

    def load_module(self, checkpoint: Path) -> L.LightningModule:
        """Rebuild the trained module from a checkpoint alone (clear error for a foreign file)."""
        ...

    def sample_inputs(self, params: Params, split: str, count: int) -> tuple[torch.Tensor, ...]:
        """Real, un-augmented inputs of ``split``, stacked per ONNX input, in a fixed order."""
        ...

    def calibration_set(self, params: Params, count: int) -> CalibrationSet:
        """A seeded draw of ``count`` train samples for post-training quantization."""
        ...

    def export_module(self, module: L.LightningModule, params: Params) -> nn.Module:
        """The graph to export: takes the ONNX inputs (raw pixels), returns the ONNX outputs."""
        ...

    def operating_threshold(self, model: Any, params: Params) -> float | None:
        """The decision threshold ``model`` ships with (chosen on the family's threshold split), or
        ``None`` for a family without one (MAL scores masks, it calls nothing)."""
        ...

    def evaluate(
        self,
        model: Any,
        params: Params,
        split: str,
        pictures_dir: Path | None = None,
        threshold: float | None = None,
    ) -> dict[str, float]:
        """Metrics of ``model`` on ``split`` (keys without the split prefix); pictures when a folder is given.

        ``threshold``: call images at this operating threshold instead of choosing one for ``model``
        (a quantized model is judged at the threshold its FP32 model ships with). Ignored by families
        without one, and on the split thresholds are chosen on (only threshold-free numbers there).
        """
        ...

    def registered_model(self, params: Params) -> str: ...


FAMILY_MODULES: dict[str, str] = {
    "segment": "components.models.changenet.family:FAMILY",
    "mal": "components.models.mal.family:FAMILY",
    "classify": "components.models.changenet_classify.family:FAMILY",
    "cam": "components.models.cam.family:FAMILY",
}
"""Family name -> ``module:attribute`` of its :class:`ModelFamily`; imported on use (torch is slow to import)."""


def get_family(name: str) -> ModelFamily:
    """The family called ``name``; a clear error naming the known ones otherwise."""
    if name not in FAMILY_MODULES:
        raise KeyError(f"unknown model family {name!r}; families are {sorted(FAMILY_MODULES)}")
    module_name, attr = FAMILY_MODULES[name].split(":")
    family = getattr(importlib.import_module(module_name), attr)
    if not isinstance(family, ModelFamily):
        raise TypeError(f"{FAMILY_MODULES[name]} does not implement ModelFamily")
    return family


def logged_params(params: Params, *sections: str) -> dict[str, Any]:
    """Flat ``seed``, ``data.*`` and the given sections of params: what a training run logs."""
    from components.tracking import flatten

    prefixes = ("seed", "data.", *(f"{section}." for section in sections))
    return {k: v for k, v in flatten(params.model_dump(mode="json")).items() if k.startswith(prefixes)}


def model_dir(params: Params, family: ModelFamily | str) -> Path:
    """``<artifacts>/models/<family>``: the training stage's DVC output (best.ckpt, last.ckpt)."""
    name = family if isinstance(family, str) else family.name
    return params.paths.artifacts_dir / "models" / name


def best_checkpoint(params: Params, family: ModelFamily | str) -> Path:
    return model_dir(params, family) / "best.ckpt"


__all__ = [
    "FAMILY_MODULES",
    "ModelFamily",
    "TrainerSettings",
    "best_checkpoint",
    "get_family",
    "logged_params",
    "model_dir",
]
