"""LightningModule of the CAM classifier: class-weighted cross-entropy, AdamW, warm-up + cosine, val metrics.

The loss weighs the anomaly class up (``cam.train.class_weights``, the reference's good 1 /
anomaly 3): defects are the minority on a line, and an unweighted classifier learns to call
everything good. Only the head and the last ``train_stages`` backbone levels learn; the frozen
layers keep their BatchNorm statistics too (:meth:`CamClassifier.freeze_norms`).

Validation logs ``val/auroc`` (threshold-free: the checkpoint monitor), ``val/accuracy`` and
``val/balanced_accuracy`` at the argmax (anomaly probability above 0.5: the operating threshold is
chosen only after training, :mod:`.evaluate`), and ``val/loss``.

Hyper-parameters are stored as plain dicts, so a checkpoint alone rebuilds the model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from components.config import CamModelParams, CamTrainParams
from components.models.cam.metrics import balanced_accuracy, rank_auroc
from components.models.cam.model import CamClassifier, anomaly_score
from components.models.checkpoint import load_lightning_module
from components.training.optim import build_optimizer, build_scheduler, parameter_groups

__all__ = ["MONITOR", "CamModule", "load_module"]

MONITOR = "val/auroc"
"""Checkpoint choice follows the image AUROC on val (threshold-free)."""


class CamModule(L.LightningModule):
    def __init__(self, model: dict[str, Any], train: dict[str, Any], load_pretrained: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        model_params = CamModelParams.model_validate(model)
        if not load_pretrained:
            model_params = model_params.model_copy(update={"pretrained": "none"})
        self.train_params = CamTrainParams.model_validate(train)
        self.model = CamClassifier.from_params(model_params)
        self.model.set_trainable_stages(self.train_params.train_stages)
        weights = torch.tensor(self.train_params.class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self._val_scores: list[np.ndarray] = []
        self._val_labels: list[np.ndarray] = []

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels.long(), weight=self.class_weights)

    def on_train_epoch_start(self) -> None:
        self.model.freeze_norms()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.model(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["label"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_scores, self._val_labels = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        self.log("val/loss", self.loss(logits, batch["label"]), batch_size=len(batch["label"]))
        self._val_scores.append(anomaly_score(logits).detach().cpu().numpy())
        self._val_labels.append(batch["label"].detach().cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        scores = np.concatenate(self._val_scores)
        labels = np.concatenate(self._val_labels).astype(bool)
        called = scores > 0.5
        values = {
            MONITOR: rank_auroc(scores, labels),
            "val/accuracy": float((called == labels).mean()),
            "val/balanced_accuracy": balanced_accuracy(called, labels),
        }
        for key, value in values.items():  # nan (one class only) would break "max" checkpointing
            self.log(key, 0.0 if value != value else float(value), prog_bar=key == MONITOR)

    def configure_optimizers(self) -> dict[str, Any]:
        groups = parameter_groups(self.model.backbone, self, self.train_params)
        optimizer = build_optimizer(groups, self.train_params)
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = math.ceil(total_steps / max(1, self.trainer.max_epochs or 1))
        scheduler = build_scheduler(optimizer, self.train_params, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load_module(checkpoint: Path | str, map_location: str = "cpu") -> CamModule:
    """Rebuild the module from a checkpoint with a clear error for a missing or foreign file."""
    return load_lightning_module(CamModule, checkpoint, "CAM classifier", map_location)
