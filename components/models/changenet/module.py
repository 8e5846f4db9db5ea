"""LightningModule for Visual ChangeNet-Segmentation: steps, optimizers and val metrics.

The network itself (:mod:`components.models.changenet`) is pure torch; this module
adds the training loop around it. Hyper-parameters are stored as plain dicts in the
checkpoint so a checkpoint alone rebuilds the model (without re-reading params.yaml).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from components.config import SegmentEvalParams, SegmentModelParams, SegmentTrainParams, TilingParams
from components.models.changenet.metrics import SegmentationMetrics
from components.models.checkpoint import load_lightning_module
from components.training.ema import WeightAveraging, build_ema
from components.training.optim import build_optimizer, build_scheduler, parameter_groups

MONITOR = "val/iou"
"""Checkpoint choice and early stopping follow the change-class IoU on val."""


class ChangeSegmentModule(WeightAveraging, L.LightningModule):
    def __init__(
        self,
        model: dict[str, Any],
        train: dict[str, Any],
        threshold: float = 0.5,
        load_pretrained: bool = True,
        eval: dict[str, Any] | None = None,
        tiling: dict[str, Any] | None = None,
    ) -> None:
        """``tiling`` (``data.tiling``): validate native-size pairs by sliding windows
        (:func:`~components.models.changenet.tiling.predict_tiled`). Stored in the checkpoint only
        when set, so checkpoints without it stay as they were."""
        super().__init__()
        self.save_hyperparameters(ignore=[] if tiling is not None else ["tiling"])
        from components.models.changenet.losses import DeepSupervisionLoss
        from components.models.changenet.model import ChangeNetSegment

        model_params = SegmentModelParams.model_validate(model)
        if not load_pretrained:
            model_params = model_params.model_copy(update={"pretrained": "none"})
        self.train_params = SegmentTrainParams.model_validate(train)
        self.model = ChangeNetSegment.from_params(model_params)
        self.model.backbone.freeze_levels(self.train_params.freeze_backbone_levels)
        self.ema = build_ema(self.model, self.train_params.ema)
        self.criterion = DeepSupervisionLoss.from_params(model_params, self.train_params)
        eval_params = SegmentEvalParams.model_validate({**(eval or {}), "threshold": threshold})
        self.val_metrics = SegmentationMetrics.from_params(model_params.num_classes, eval_params)
        self.tiling = TilingParams.model_validate(tiling) if tiling is not None else None
        self.eval_batch_size = eval_params.batch_size

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(test, golden)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        outputs = self.model(batch["test"], batch["golden"])
        total, parts = self.criterion(outputs, batch["mask"])
        size = batch["mask"].shape[0]
        self.log("train/loss", total, prog_bar=True, on_step=True, on_epoch=True, batch_size=size, sync_dist=True)
        for key, value in parts.items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return total

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.tiling is not None:
            self._tiled_validation_step(batch)
            return
        outputs = self.eval_model(batch["test"], batch["golden"])
        total, _ = self.criterion(outputs, batch["mask"])
        self.log("val/loss", total, prog_bar=True, batch_size=batch["mask"].shape[0], sync_dist=True)
        change_prob = torch.softmax(outputs[-1].float(), dim=1)[:, 1]
        self.val_metrics.update(change_prob.detach().cpu(), batch["mask"].cpu(), list(batch["name"]))

    def _tiled_validation_step(self, batch: dict[str, Any]) -> None:
        """Native-size pairs: one stitched full-size map each, scored at full resolution (no val/loss)."""
        from components.models.changenet.tiling import predict_tiled

        assert self.tiling is not None
        for i, name in enumerate(batch["name"]):
            prob = predict_tiled(
                self.eval_model,
                batch["test"][i],
                batch["golden"][i],
                self.tiling.tile_size,
                self.tiling.overlap,
                self.eval_batch_size,
                self.val_metrics.num_classes,
            )
            self.val_metrics.update(prob[None], batch["mask"][i : i + 1].cpu(), [name])

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def on_validation_epoch_end(self) -> None:
        metrics = self._gathered_metrics().compute()
        keys = ("iou", "f1", "precision", "recall", "oa", "miou", "image_auroc", "image_ap", "pixel_ap")
        values = {f"val/{k}": float(metrics[k]) for k in keys if k in metrics}
        # nan (e.g. nothing predicted yet) would break "max" checkpointing: count it as 0 there.
        values = {k: (0.0 if v != v else v) for k, v in values.items()}
        values.setdefault(MONITOR, 0.0)
        for key, value in values.items():
            self.log(key, value, prog_bar=key == MONITOR, sync_dist=False)

    def _gathered_metrics(self) -> SegmentationMetrics:
        """Merge every rank's metric state so that DDP reports the metrics of the whole split."""
        if self.trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return self.val_metrics
        gathered: list[SegmentationMetrics | None] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, self.val_metrics)
        merged = self.val_metrics.like()
        for part in gathered:
            if part is not None:
                merged.merge(part)
        return merged

    def configure_optimizers(self) -> dict[str, Any]:
        groups = parameter_groups(self.model.backbone, self, self.train_params)
        optimizer = build_optimizer(groups, self.train_params)
        total_steps = int(self.trainer.estimated_stepping_batches)  # per rank, after limit_train_batches
        steps_per_epoch = math.ceil(total_steps / max(1, self.trainer.max_epochs or 1))
        scheduler = build_scheduler(optimizer, self.train_params, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load_module(checkpoint: Path | str, map_location: str = "cpu") -> ChangeSegmentModule:
    """Rebuild the module from a checkpoint with a clear error for a missing or foreign file.

    ``.model`` holds the weights to evaluate and deploy: the weight average when training kept
    one (the weights validation chose the checkpoint by), else the trained weights.
    """
    module = load_lightning_module(ChangeSegmentModule, checkpoint, "ChangeNet-Segmentation", map_location)
    return module.use_averaged_weights()
