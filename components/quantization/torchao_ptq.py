"""INT8 weight-only quantization with torchao, for serving from PyTorch.

``Int8WeightOnlyConfig`` (the obvious choice) only touches ``nn.Linear``, and ChangeNet with a
CNN backbone has none: on this model it is a silent no-op. torchao 0.18's ``IntxWeightOnlyConfig``
with ``torch.int8`` is the same scheme (symmetric int8 weights, float activations) and also
covers ``Conv2d`` (``IntxUnpackedToInt8Tensor`` implements ``conv2d``), so that is what is used,
on every dense convolution and linear layer. Depthwise convolutions (tiny, and torchao's
per-input-channel blocks do not fit a one-channel kernel) and transposed convolutions (no
torchao kernel) stay float.

What it buys is memory (int8 weights, about 4x smaller on disk and in RAM). What it does not buy
on a CPU is speed: the weights are dequantized on every call, so eager latency is a little
*worse* than FP32. The file holds a state dict plus the model hyper-parameters (the whole
module does not pickle: timm layers hold ``functools.partial`` objects);
:func:`load_torchao_model` rebuilds it.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

FILENAME = "torchao_int8wo.pt"
"""File name after the family prefix (``<family>_torchao_int8wo.pt``)."""
FORMAT = "inspectops-torchao-int8-weight-only"
CONFIG_NAME = "IntxWeightOnlyConfig(weight_dtype=int8, granularity=PerAxis(0))"


class TorchAOError(RuntimeError):
    """torchao quantization or loading that failed; the message names the file."""


def _config() -> Any:
    from torchao.quantization import IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis

    return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))


def _quantizable(module: nn.Module, fqn: str = "") -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1  # ConvTranspose2d is not a Conv2d


def apply_int8_weight_only(model: nn.Module) -> list[str]:
    """Quantize ``model`` in place; returns the names of the layers whose weights became int8."""
    from torchao.quantization import quantize_

    names = [name for name, module in model.named_modules() if _quantizable(module)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(model, _config(), filter_fn=_quantizable)
    return names


def quantize_torchao(
    model: nn.Module, model_hparams: dict[str, Any], out_path: Path | str, family: str = "segment"
) -> tuple[nn.Module, dict[str, Any]]:
    """Quantize a copy of ``model`` and save it to ``out_path``; returns the copy and a sidecar description.

    ``model_hparams``: the model section the model was built from, stored in the file with the
    ``family`` name so that :func:`load_torchao_model` can rebuild the architecture
    (:meth:`ModelFamily.build_model`).
    """
    out_path = Path(out_path)
    started = time.perf_counter()
    quantized = copy.deepcopy(model).eval()
    layers = apply_int8_weight_only(quantized)
    payload = {
        "format": FORMAT,
        "family": family,
        "config": CONFIG_NAME,
        "model": dict(model_hparams),
        "quantized_layers": layers,
        "state_dict": quantized.state_dict(),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.stem}.tmp-", suffix=".pt", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        torch.save(payload, tmp)
        tmp.chmod(0o644)
        os.replace(tmp, out_path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, Exception):
            raise TorchAOError(f"{out_path}: cannot save the torchao model: {type(error).__name__}: {error}") from error
        raise
    dense = [name for name, m in quantized.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return quantized, {
        "backend": "torchao",
        "variant": "torchao",
        "target": "pytorch",
        "format": "torch-state-dict",
        "precision": "int8 weights, fp32 activations",
        "config": CONFIG_NAME,
        "quantized_layers": len(layers),
        "float_layers": len(dense) - len(layers),
        "seconds": time.perf_counter() - started,
    }


def load_torchao_model(path: Path | str) -> nn.Module:
    """Rebuild a model saved by :func:`quantize_torchao` (int8 weights restored as torchao tensors)."""
    path = Path(path)
    if not path.is_file():
        raise TorchAOError(f"{path}: torchao model not found")
    import torchao.quantization  # noqa: F401  (registers its tensor subclasses as safe globals for torch.load)

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TorchAOError(f"{path}: not a readable torch file ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise TorchAOError(f"{path}: not an inspectops torchao model (format {FORMAT!r})")
    from components.models.family import get_family

    model = get_family(payload.get("family", "segment")).build_model(payload["model"]).eval()
    apply_int8_weight_only(model)
    try:
        model.load_state_dict(payload["state_dict"], assign=True)
    except (RuntimeError, KeyError) as error:
        raise TorchAOError(f"{path}: weights do not fit the stored architecture: {error}") from None
    return model


__all__ = ["FILENAME", "TorchAOError", "apply_int8_weight_only", "load_torchao_model", "quantize_torchao"]
