"""Native-resolution ChangeNet-Segmentation: windows over a full-size pair, stitched to one map.

With ``data.tiling`` set, the segmentation model only ever sees ``tile_size`` squares, and a
full-size pair (1-20 megapixels) is judged by sliding overlapping windows over it. Every path that
turns a pair into a change map calls :func:`predict_tiled`: validation during training
(:mod:`.module`), evaluation and the quantized copies' evaluation (:mod:`.evaluate`, whatever runs the
model: PyTorch, an onnxruntime session, torchao), ``inspectops infer segment``
(:mod:`components.inference.segment_infer`) and the exported runner
(:meth:`components.export.runtime.OnnxSegmentModel.predict_full`).

- :func:`tile_origins`: window corners per axis ``0, s, 2s, ...`` with stride ``s = tile - overlap``,
  the last one moved back to end at the border, so the windows cover the image exactly and every
  window lies inside it (an image smaller than a tile is padded by edge replication first).
- :func:`window_weight`: a separable linear ramp over ``overlap`` pixels at each window edge (never 0),
  so seams between windows blend instead of jumping; the stitched map is the weighted mean.
- :func:`predict_tiled`: windows run ``batch`` at a time; each batch's change probability is added
  into one float32 sum and weight map and dropped, so memory is two ``H x W`` float maps plus one
  batch, whatever the image size (a 5-megapixel pair stays far below 4 GiB).
- :func:`predict_resized`: the resize-to-``image_size`` path (no tiling), with the probability
  brought back to full size bilinearly: what the tiled model is compared against at full resolution.
- :func:`tile_box` / :func:`crop_tile`: where a training tile lies (random, or centred with jitter on
  a change pixel) and its crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "axis_origins",
    "change_probability",
    "crop_tile",
    "predict_resized",
    "predict_tiled",
    "sample_tile",
    "tile_box",
    "tile_origins",
    "tiles_per_image",
    "window_weight",
]


def axis_origins(size: int, tile: int, overlap: int) -> list[int]:
    """Window starts along one axis of ``size`` pixels: stride ``tile - overlap``, last one ending at the border."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile {tile}, overlap {overlap}")
    if size <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((size - tile) / stride) + 1
    return [min(i * stride, size - tile) for i in range(count)]


def tile_origins(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every window, row by row; together they cover ``height x width`` exactly."""
    return [(top, left) for top in axis_origins(height, tile, overlap) for left in axis_origins(width, tile, overlap)]


def tiles_per_image(height: int, width: int, tile: int) -> int:
    """Training tiles an image contributes to an epoch: ``ceil(H * W / tile^2)``, its area seen about once."""
    return max(1, math.ceil(height * width / (tile * tile)))


def window_weight(tile: int, overlap: int) -> torch.Tensor:
    """``(tile, tile)`` blending weight: 1 inside, a linear ramp ``1/(overlap+1) .. 1`` over ``overlap`` edge pixels."""
    ramp = torch.ones(tile, dtype=torch.float32)
    if overlap > 0:
        edge = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        ramp[:overlap] = edge
        ramp[tile - overlap :] = torch.minimum(ramp[tile - overlap :], edge.flip(0))
    return ramp[:, None] * ramp[None, :]


def change_probability(output: Any, num_classes: int = 2) -> torch.Tensor:
    """``(N, h, w)`` change probability from a model's output (logits, or a list/tuple ending with them)."""
    final = output[-1] if isinstance(output, list | tuple) else output
    prob = torch.softmax(final.float(), dim=1)
    return prob[:, 1] if num_classes == 2 else 1.0 - prob[:, 0]


def _as_chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` tensor: a float tensor as it is, an ``H x W x 3`` uint8 array as a view (not yet scaled)."""
    if isinstance(image, torch.Tensor):
        return image
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def _pad_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Replicate the bottom/right edge so the image is at least ``height x width``."""
    pad_h, pad_w = max(0, height - image.shape[-2]), max(0, width - image.shape[-1])
    if not pad_h and not pad_w:
        return image
    padded = F.pad(image[None].float(), (0, pad_w, 0, pad_h), mode="replicate")[0]
    return padded.to(image.dtype)


def _window_batch(image: torch.Tensor, origins: Sequence[tuple[int, int]], tile: int) -> torch.Tensor:
    crops = torch.stack([image[:, top : top + tile, left : left + tile] for top, left in origins])
    return crops.float().div_(255.0) if crops.dtype == torch.uint8 else crops.float()


def _device(runner: Any) -> torch.device:
    """Where a PyTorch runner's weights live (windows go there); the CPU for any other runner."""
    if isinstance(runner, torch.nn.Module):
        for tensor in runner.parameters():
            return tensor.device
    return torch.device("cpu")


@torch.inference_mode()
def predict_tiled(
    runner: Any,
    test: np.ndarray | torch.Tensor,
    golden: np.ndarray | torch.Tensor,
    tile: int,
    overlap: int,
    batch: int = 8,
    num_classes: int = 2,
) -> torch.Tensor:
    """Full-size ``(H, W)`` float32 change probability of one pair, from ``tile``-sized windows.

    ``test``/``golden``: ``(3, H, W)`` float tensors in [0, 1], or ``H x W x 3`` uint8 arrays (converted
    window by window). ``runner``: anything called as ``runner(test_batch, golden_batch)`` returning
    logits ``(N, C, tile, tile)`` (or a list/tuple ending with them): the PyTorch model, an
    :class:`~components.export.runtime.OnnxModel`, a torchao module. Windows are stitched by the
    weighted mean of :func:`window_weight`, accumulated batch by batch.
    """
    test_t, golden_t = _as_chw(test), _as_chw(golden)
    if test_t.shape != golden_t.shape:
        raise ValueError(f"test {tuple(test_t.shape)} and golden {tuple(golden_t.shape)} differ in size")
    height, width = int(test_t.shape[-2]), int(test_t.shape[-1])
    test_t, golden_t = _pad_to(test_t, tile, tile), _pad_to(golden_t, tile, tile)
    full_h, full_w = int(test_t.shape[-2]), int(test_t.shape[-1])
    total = torch.zeros((full_h, full_w), dtype=torch.float32)
    weights = torch.zeros((full_h, full_w), dtype=torch.float32)
    weight = window_weight(tile, overlap)
    origins = tile_origins(full_h, full_w, tile, overlap)
    if hasattr(runner, "eval"):
        runner.eval()
    device = _device(runner)
    for start in range(0, len(origins), max(1, int(batch))):
        chunk = origins[start : start + max(1, int(batch))]
        windows = (_window_batch(test_t, chunk, tile).to(device), _window_batch(golden_t, chunk, tile).to(device))
        prob = change_probability(runner(*windows), num_classes)
        if tuple(prob.shape[-2:]) != (tile, tile):
            raise ValueError(f"the model returned {tuple(prob.shape[-2:])} maps for {tile}x{tile} windows")
        for (top, left), window in zip(chunk, prob.cpu(), strict=True):
            total[top : top + tile, left : left + tile] += window * weight
            weights[top : top + tile, left : left + tile] += weight
    return (total / weights)[:height, :width].contiguous()


@torch.inference_mode()
def predict_resized(
    runner: Any, test: np.ndarray, golden: np.ndarray, size: int, num_classes: int = 2, resample: str = "bicubic"
) -> torch.Tensor:
    """Full-size ``(H, W)`` change probability of a model that sees the pair resized to ``size x size``.

    The inputs (``H x W x 3`` uint8) are resized as prepare does (PIL, ``resample``); the probability
    is resized back to ``H x W`` bilinearly, so it is scored against the full-size mask.
    """
    from PIL import Image

    filters = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}

    def small(image: np.ndarray) -> torch.Tensor:
        resized = np.asarray(Image.fromarray(image).resize((size, size), filters[resample]), dtype=np.float32)
        return torch.from_numpy(resized / 255.0).permute(2, 0, 1)[None]

    if hasattr(runner, "eval"):
        runner.eval()
    height, width = test.shape[:2]
    device = _device(runner)
    prob = change_probability(runner(small(test).to(device), small(golden).to(device)), num_classes)[:, None]
    return F.interpolate(prob.cpu(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]


def tile_box(
    height: int,
    width: int,
    tile: int,
    draws: Sequence[float],
    centre: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """``(top, left)`` of a training tile inside an image of at least ``tile x tile``.

    ``draws``: two uniform numbers in [0, 1). Without ``centre``: a uniformly placed tile. With
    ``centre`` (a change pixel): the tile centred on it, shifted by up to a quarter tile each way
    (so the defect is not always in the middle), then clamped into the image.
    """
    if centre is None:
        return int(draws[0] * (height - tile + 1)), int(draws[1] * (width - tile + 1))
    jitter = tile // 4
    dy = round((2.0 * draws[0] - 1.0) * jitter)
    dx = round((2.0 * draws[1] - 1.0) * jitter)
    top = min(max(centre[0] - tile // 2 + dy, 0), height - tile)
    left = min(max(centre[1] - tile // 2 + dx, 0), width - tile)
    return top, left


def crop_tile(array: np.ndarray, top: int, left: int, tile: int) -> np.ndarray:
    """``tile x tile`` crop of an ``H x W (x C)`` array, edge-padded first when it is smaller than a tile."""
    pad_h, pad_w = max(0, tile - array.shape[0]), max(0, tile - array.shape[1])
    if pad_h or pad_w:
        array = np.pad(array, [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2), mode="edge")
    return array[top : top + tile, left : left + tile]


def sample_tile(item: dict[str, Any], tile: int, draws: Sequence[float] | None = None) -> dict[str, Any]:
    """A ``tile``-sized copy of a dataset sample (``test``, ``golden``, ``mask``): what an exported
    (tile-sized) model is traced, parity-checked and calibrated on. ``draws`` (two uniforms) place it
    at random; ``None`` takes the tile at the image centre."""
    test = _pad_to(item["test"], tile, tile)
    height, width = int(test.shape[-2]), int(test.shape[-1])
    if draws is None:
        top, left = (height - tile) // 2, (width - tile) // 2
    else:
        top, left = tile_box(height, width, tile, draws)
    out = dict(item)
    for key in ("test", "golden", "mask"):
        value = item[key]
        padded = _pad_to(value, tile, tile) if value.ndim == 3 else _pad_to(value[None], tile, tile)[0]
        out[key] = padded[..., top : top + tile, left : left + tile].contiguous()
    return out
