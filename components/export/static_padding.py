"""Freeze TensorFlow-style "SAME" padding to constants before export.

timm's ``tf_*`` backbones (the default ``tf_efficientnet_lite0`` among them) pad their stride-2
convolutions by an amount computed from the input size at run time (``Conv2dSame``). Traced
to ONNX, that becomes a chain of Shape/Gather/Div/Ceil/Sub ops feeding a ``Pad`` node, per
layer. The exported graph is only valid at the traced height and width anyway, so the chain
only ever computes constants, but it costs three things downstream:

- onnxruntime cannot fold it (the batch axis is dynamic) nor fuse the ``Pad`` into the ``Conv``;
- its symbolic shape inference gives up on it, so ``quant_pre_process`` cannot run in full;
- onnxruntime's static quantizer treats the float arithmetic of the pad computation as
  activations and inserts Q/DQ pairs *into the padding amounts*, and dequantizes a whole
  feature map just to read its shape.

:func:`freeze_same_padding` swaps each such convolution for one that pads by the constants
measured at the export size: the same function at that size, exported as a constant ``Pad``
that onnxruntime fuses into the convolution.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

try:  # timm's dynamic-SAME convolution; absent in a timm without tf-style layers
    from timm.layers import Conv2dSame
except ImportError:  # pragma: no cover - every supported timm has it
    Conv2dSame = None  # type: ignore[assignment, misc]


class StaticPadConv2d(nn.Conv2d):
    """A convolution with a fixed ``(left, right, top, bottom)`` zero padding applied before it."""

    def __init__(self, source: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
        super().__init__(
            source.in_channels,
            source.out_channels,
            source.kernel_size,  # type: ignore[arg-type]
            source.stride,  # type: ignore[arg-type]
            0,
            source.dilation,  # type: ignore[arg-type]
            source.groups,
            source.bias is not None,
        )
        self.weight = source.weight
        self.bias = source.bias
        self.static_pad = tuple(int(p) for p in pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.static_pad):
            x = F.pad(x, self.static_pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def freeze_same_padding(model: nn.Module, example: tuple[torch.Tensor, ...]) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose dynamic-SAME convolutions pad by constants for ``example``'s size.

    Runs ``model`` once on ``example`` to learn each layer's input size. Returns the copy and the
    number of layers frozen (0 for backbones without dynamic padding; the copy is then unchanged).
    """
    if Conv2dSame is None:
        return model, 0
    frozen = copy.deepcopy(model).eval()
    targets = [(name, module) for name, module in frozen.named_modules() if isinstance(module, Conv2dSame)]
    if not targets:
        return frozen, 0
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, module in targets
    ]
    try:
        with torch.no_grad():
            frozen(*example)
    finally:
        for hook in hooks:
            hook.remove()
    for name, module in targets:
        if name not in sizes:  # never ran: leave it dynamic
            continue
        height, width = sizes[name]
        pad_h = _same_pad(height, module.kernel_size[0], module.stride[0], module.dilation[0])
        pad_w = _same_pad(width, module.kernel_size[1], module.stride[1], module.dilation[1])
        replacement = StaticPadConv2d(module, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        parent_name, _, child = name.rpartition(".")
        parent = frozen.get_submodule(parent_name) if parent_name else frozen
        setattr(parent, child, replacement)
    return frozen, len(sizes)


__all__ = ["StaticPadConv2d", "freeze_same_padding"]
