"""An exponential moving average of a model's weights, for the families that validate and deploy it.

Polyak averaging: the average of the last few hundred steps generalises better than the last
step and does not share its noise, which matters with the few hundred images of an inspection
dataset, where one large step can wipe out an epoch's progress on val. timm's ``ModelEmaV3``
does the averaging (parameters and BatchNorm statistics, in place, ``foreach``).
"""

from __future__ import annotations

from typing import Any, Self

from timm.utils import ModelEmaV3
from torch import nn

from components.config import EmaParams

__all__ = ["WeightAveraging", "build_ema"]


def build_ema(model: nn.Module, params: EmaParams | None) -> ModelEmaV3 | None:
    """A frozen, eval-mode average of ``model`` (``None`` when ``params`` is ``None``).

    Its parameters never need gradients: they are set by :meth:`ModelEmaV3.update` only, and the
    optimizers skip them (:func:`components.training.optim.parameter_groups`).
    """
    if params is None:
        return None
    ema = ModelEmaV3(model, decay=params.decay, use_warmup=params.warmup)
    ema.requires_grad_(False)
    return ema


class WeightAveraging:
    """Mixin for a LightningModule with ``self.model`` and ``self.ema`` (from :func:`build_ema`):
    validation judges the average, every training step updates it, and the loaded checkpoint
    deploys it (:meth:`use_averaged_weights`)."""

    model: nn.Module
    ema: ModelEmaV3 | None
    global_step: int

    @property
    def eval_model(self) -> nn.Module:
        """What validation judges and checkpoint choice follows: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def use_averaged_weights(self) -> Self:
        """Put the weight average into ``self.model`` and drop it: the model to evaluate and deploy."""
        if self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())
            self.ema = None
        return self
