"""Rebuild a trained LightningModule from its checkpoint alone, with one clear error for a bad file.

Every family's module stores its hyper-parameters as plain dicts (``save_hyperparameters``), so
the checkpoint holds all it takes to rebuild the network; the pretrained weights are not loaded
again (the checkpoint's weights replace them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import lightning as L
import torch

ModuleT = TypeVar("ModuleT", bound=L.LightningModule)


class CheckpointError(ValueError):
    """A checkpoint that cannot rebuild the model; the message names the file."""


def load_lightning_module(
    module_class: type[ModuleT], checkpoint: Path | str, title: str, map_location: str = "cpu"
) -> ModuleT:
    """``module_class`` rebuilt from ``checkpoint`` in eval mode; ``title`` names the model in errors."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint not found")
    try:
        payload = torch.load(checkpoint, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"{checkpoint}: not a readable torch checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "hyper_parameters" not in payload:
        raise CheckpointError(
            f"{checkpoint}: not a Lightning checkpoint of inspectops (no state_dict/hyper_parameters)"
        )
    hparams = {**payload["hyper_parameters"], "load_pretrained": False}
    try:
        module = module_class(**hparams)
        module.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{checkpoint}: does not fit a {title} model: {error}") from None
    return module.eval()


__all__ = ["CheckpointError", "load_lightning_module"]
