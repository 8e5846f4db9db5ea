"""An exponential moving average of a model's weights, for the families that validate and deploy it.

Polyak averaging: the average of the last few hundred steps generalises better than the last
step and does not share its noise, which matters with the few hundred images of an inspection
dataset, where one large step can wipe out an epoch's progress on val. timm's ``ModelEmaV3``
does the averaging (parameters and BatchNorm statistics, in place, ``foreach``).
"""

from __future__ import annotations

from timm.utils import ModelEmaV3
from torch import nn

from components.config import EmaParams

__all__ = ["build_ema"]


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
