"""LightningModule for ChangeNet-Classification: steps, optimiser and threshold-free val metrics.

Validation logs ``val/auroc`` (the checkpoint monitor) and ``val/ap``: numbers that need no
operating threshold. TAO logs accuracies at a fixed margin of 2.0 during training, which means
nothing for probabilities; here the threshold is chosen once, after training, on the train
split (:mod:`components.models.changenet_classify.evaluate`), never on the split it reports.

Hyper-parameters are stored as plain dicts (and the number of lights), so a checkpoint alone
rebuilds the model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from components.config import ClassifyModelParams, ClassifyTrainParams
from components.evaluation.verdict import average_precision, rank_auroc
from components.models.changenet_classify.losses import ClassificationLoss, change_mask_loss
from components.models.changenet_classify.model import ChangeNetClassify, defect_score
from components.models.checkpoint import load_lightning_module
from components.training.ema import WeightAveraging, build_ema
from components.training.optim import build_optimizer, build_scheduler, parameter_groups

__all__ = ["MONITOR", "ChangeClassifyModule", "load_module"]

MONITOR = "val/auroc"
"""Checkpoint choice follows the image AUROC on val (threshold-free)."""


class ChangeClassifyModule(WeightAveraging, L.LightningModule):
    def __init__(
        self, model: dict[str, Any], train: dict[str, Any], num_lights: int, load_pretrained: bool = True
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model_params = ClassifyModelParams.model_validate(model)
        if not load_pretrained:
            model_params = model_params.model_copy(update={"pretrained": "none"})
        self.train_params = ClassifyTrainParams.model_validate(train)
        self.model = ChangeNetClassify.from_params(model_params, num_lights)
        if self.train_params.freeze_backbone:
            self.model.backbone.requires_grad_(False)
        self.ema = build_ema(self.model, self.train_params.ema)
        self.criterion = ClassificationLoss(self.train_params.cls_weight, self.train_params.train_margin_euclid)
        self._val_scores: list[np.ndarray] = []
        self._val_labels: list[np.ndarray] = []

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        return self.model(test, golden)

    def on_train_epoch_start(self) -> None:
        if self.train_params.freeze_backbone:  # frozen BatchNorm statistics too: the features stay ImageNet's
            self.model.backbone.eval()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        size = len(batch["label"])
        weight = self.train_params.mask_loss_weight
        if weight <= 0 or "mask" not in batch:
            loss = self.criterion(self.model(batch["test"], batch["golden"]), batch["label"])
        else:  # the verdict's location scores also learn where the change is
            logits, maps = self.model.forward_with_map(batch["test"], batch["golden"])
            assert maps, "mask_loss_weight needs pooling: topk (checked by the config)"
            verdict = self.criterion(logits, batch["label"])
            masks, has_mask = self.model.arrange_mask(batch["mask"]), batch["has_mask"]
            weights = self.model.map_weights
            mask = sum(w * change_mask_loss(m, masks, has_mask) for w, m in zip(weights, maps, strict=True))
            mask = mask / sum(weights)
            self.log("train/mask_loss", mask, on_step=False, on_epoch=True, batch_size=size)
            loss = verdict + weight * mask
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs = self.eval_model(batch["test"], batch["golden"])
        self.log("val/loss", self.criterion(outputs, batch["label"]), batch_size=len(batch["label"]))
        self._val_scores.append(defect_score(outputs).detach().cpu().numpy())
        self._val_labels.append(batch["label"].detach().cpu().numpy())

    def on_validation_epoch_start(self) -> None:
        self._val_scores, self._val_labels = [], []

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        scores, labels = np.concatenate(self._val_scores), np.concatenate(self._val_labels)
        values = {MONITOR: rank_auroc(scores, labels), "val/ap": average_precision(scores, labels)}
        for key, value in values.items():  # nan (one class only) would break "max" checkpointing
            self.log(key, 0.0 if value != value else float(value), prog_bar=key == MONITOR)

    def configure_optimizers(self) -> dict[str, Any]:
        groups = parameter_groups(self.model.backbone, self, self.train_params)
        optimizer = build_optimizer(groups, self.train_params)
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = math.ceil(total_steps / max(1, self.trainer.max_epochs or 1))
        scheduler = build_scheduler(optimizer, self.train_params, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load_module(checkpoint: Path | str, map_location: str = "cpu") -> ChangeClassifyModule:
    """Rebuild the module from a checkpoint with a clear error for a missing or foreign file.

    ``.model`` holds the weights to evaluate and deploy: the weight average when training kept one.
    """
    module = load_lightning_module(ChangeClassifyModule, checkpoint, "ChangeNet-Classification", map_location)
    return module.use_averaged_weights()
