"""LightningModule for MAL: student/teacher training on boxes, mask-IoU validation, optimiser.

The network (:mod:`components.models.mal.model`), its losses (:mod:`.losses`) and the
crop/paste geometry (:mod:`.crops`, :mod:`.predict`) are pure torch; this module adds the
training loop (Lan et al., CVPR 2023, sections 3.3-3.4):

- **Student and EMA teacher.** The student learns by gradient descent; the teacher follows it
  by an exponential moving average after every optimiser step (:func:`ema_update`, m = 0.996)
  and never gets gradients. As in the paper, the teacher is built *independently*: same
  (pretrained) encoder weights as the student, its own randomly initialised heads; not a
  copy of the student. (Here its encoder weights are copied from the student rather than
  loaded a second time: the same values, one load.) The teacher's forward always runs in
  eval mode (switched around the call, so Lightning never finds a module left in eval mode at
  the start of training), so BatchNorm encoders use the running statistics copied from the student.
- **Loss** at the logit resolution (the box mask and crop area-resized to it):
  ``mil_weight * ramp(mil) * MIL + crf_weight * ramp(crf) * CRF``. The CRF's colour affinity
  is computed on the *student's* augmented crop, ImageNet-normalised, as in the paper's code:
  the pseudo-mask must follow the edges of the image the student actually saw.
- **Validation**: the student predicts the 1.3x test crop, probabilities outside the box are
  zeroed, pasted into the image, thresholded at ``eval.mask_threshold`` and compared with the
  ground-truth mask: ``val/miou`` (mean over instances) is the checkpoint monitor.
- **Optimiser**: AdamW, encoder at ``lr * backbone_lr_scale``, linear warm-up for
  ``warmup_ratio`` of all steps, then a half cosine down to ``lr * min_lr_ratio`` (paper:
  one warm-up epoch, min_lr = 0.2 lr), stepped every batch.

Hyper-parameters are stored as plain dicts in the checkpoint, so :func:`load_module` rebuilds
the model from the checkpoint alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from components.config import MalEvalParams, MalModelParams, MalTrainParams
from components.models.checkpoint import CheckpointError, load_lightning_module
from components.models.mal.losses import crf_loss, linear_ramp, mil_projection_loss
from components.models.mal.metrics import InstanceIoU, filled_box_mask, mask_iou
from components.models.mal.model import MaskAutoLabeler, ema_update
from components.models.mal.predict import crop_probabilities, paste_instance, predict_instance_masks

__all__ = [
    "MONITOR",
    "CheckpointError",
    "MaskAutoLabelerModule",
    "load_module",
    "predict_instance_masks",
    "warmup_cosine",
]

MONITOR = "val/miou"
"""Checkpoint choice follows the instance-mean mask IoU on val."""


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """LR factor at ``step``: linear warm-up to 1 over ``warmup_steps``, then half cosine to ``min_ratio``.

    The warm-up keeps the first updates of the random heads from wrecking the pretrained
    encoder; ending at ``min_ratio`` (paper: 0.2), not 0, keeps the last epoch learning.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode for the block, then restore its mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class MaskAutoLabelerModule(L.LightningModule):
    """MAL training: ``student`` (trained), ``teacher`` (EMA), losses, val mIoU, optimiser.

    Args:
        model, train, eval: the ``mal.model``, ``mal.train`` and ``mal.eval`` sections as plain
            dicts (validated by :class:`MalModelParams`, :class:`MalTrainParams`,
            :class:`MalEvalParams`), so the checkpoint can rebuild the module.
        load_pretrained: load the encoder's pretrained weights (``False`` when the weights come
            from a checkpoint anyway).
    """

    def __init__(
        self,
        model: dict[str, Any],
        train: dict[str, Any],
        eval: dict[str, Any],
        load_pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model_params = MalModelParams.model_validate(model)
        if not load_pretrained:
            model_params = model_params.model_copy(update={"pretrained": "none"})
        self.model_params = model_params
        self.train_params = MalTrainParams.model_validate(train)
        self.eval_params = MalEvalParams.model_validate(eval)
        self.student = MaskAutoLabeler.from_params(model_params)
        self.teacher = MaskAutoLabeler.from_params(model_params.model_copy(update={"pretrained": "none"}))
        self.teacher.encoder.load_state_dict(self.student.encoder.state_dict())
        self.teacher.requires_grad_(False)
        self.val_metrics = InstanceIoU()

    @property
    def model(self) -> MaskAutoLabeler:
        """The network that is deployed and labels: the student (paper: the default at inference).

        The shared stages read ``module.model``; an alias, not a second registered submodule,
        so the checkpoint holds the student's weights once.
        """
        return self.student

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """The student's mask logits (what is deployed and used for labelling)."""
        return self.student(crops)

    # ---------------------------------------------------------------------------- training

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``loss`` (weighted, ramped), ``mil`` and ``crf`` of a batch (unweighted)."""
        t = self.train_params
        student_crops = batch["student"]
        logits = self.student(student_crops)
        with torch.no_grad(), _eval_mode(self.teacher):
            teacher_logits = self.teacher(batch["teacher"])
        size = logits.shape[-2:]
        box = F.interpolate(batch["box_mask"].float(), size=size, mode="area")
        image = F.interpolate(self.student.normalize(student_crops).float(), size=size, mode="area")
        probs = torch.sigmoid(logits.float())
        teacher_probs = torch.sigmoid(teacher_logits.float())
        mil = mil_projection_loss(probs, box)
        crf = crf_loss(probs, teacher_probs, image, box, zeta=t.crf_zeta, iterations=t.crf_iterations)
        step = int(self.global_step)
        loss = (
            t.mil_weight * linear_ramp(step, t.mil_ramp_steps) * mil
            + t.crf_weight * linear_ramp(step, t.crf_ramp_steps) * crf
        )
        return {"loss": loss, "mil": mil.detach(), "crf": crf.detach()}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        parts = self.losses(batch)
        size = int(batch["student"].shape[0])
        self.log(
            "train/loss", parts["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=size, sync_dist=True
        )
        # Per step too: the two terms move on different schedules (ramps), worth seeing as they move.
        for key in ("mil", "crf"):
            self.log(f"train/{key}", parts[key], on_step=True, on_epoch=True, batch_size=size, sync_dist=True)
        return parts["loss"]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the teacher's EMA update (so the teacher follows the new weights)."""
        super().optimizer_step(*args, **kwargs)
        ema_update(self.teacher, self.student, self.train_params.teacher_momentum)

    # -------------------------------------------------------------------------- validation

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probs = crop_probabilities(self.student, batch["teacher"], batch["box_mask"]).cpu()
        threshold = self.eval_params.mask_threshold
        for i, truth in enumerate(batch["gt_mask"]):
            gt = truth.cpu().numpy().astype(bool)
            mask, _ = paste_instance(probs[i, 0], batch["crop_box"][i].tolist(), gt.shape, threshold)
            self.val_metrics.update(
                ann_id=int(batch["ann_id"][i]),
                category=batch["category"][i],
                box_area=float(batch["box_area"][i]),
                iou=mask_iou(mask, gt),
                box_iou=mask_iou(filled_box_mask(batch["box"][i].tolist(), gt.shape), gt),
            )

    def on_validation_epoch_end(self) -> None:
        summary = self._gathered_metrics().summary()
        values = {f"val/{key}": value for key, value in summary.items()}
        # NaN (no val instances) would break "max" checkpointing: count it as 0 there.
        values = {key: (0.0 if value != value else value) for key, value in values.items()}
        values.setdefault(MONITOR, 0.0)
        for key, value in values.items():
            self.log(key, value, prog_bar=key == MONITOR, sync_dist=False)

    def _gathered_metrics(self) -> InstanceIoU:
        """Every rank's instances merged, so that DDP reports the metrics of the whole split."""
        if self.trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return self.val_metrics
        gathered: list[InstanceIoU | None] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, self.val_metrics)
        merged = InstanceIoU()
        for part in gathered:
            if part is not None:
                merged.merge(part)
        return merged

    # --------------------------------------------------------------------------- optimiser

    def configure_optimizers(self) -> dict[str, Any]:
        t = self.train_params
        encoder = [p for p in self.student.encoder.parameters() if p.requires_grad]
        encoder_ids = {id(p) for p in encoder}
        heads = [p for p in self.student.parameters() if p.requires_grad and id(p) not in encoder_ids]
        groups = [{"params": heads, "lr": t.lr}]
        if encoder:
            groups.append({"params": encoder, "lr": t.lr * t.backbone_lr_scale})
        optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        estimated = float(self.trainer.estimated_stepping_batches)
        # An open-ended run (max_epochs=-1) has no length to schedule over: warm up, then hold.
        total = int(estimated) if math.isfinite(estimated) else 0
        warmup = round(t.warmup_ratio * total)
        if total:
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: warmup_cosine(step, total, warmup, t.min_lr_ratio)
            )
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load_module(checkpoint: Path | str, map_location: str = "cpu") -> MaskAutoLabelerModule:
    """Rebuild the module from a checkpoint with a clear error for a missing or foreign file."""
    return load_lightning_module(MaskAutoLabelerModule, checkpoint, "Mask Auto-Labeler", map_location)
