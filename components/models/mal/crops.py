"""Box-centred crops for MAL: where to cut, how to cut and resize, and how to paste back.

MAL never sees a whole image. Every sample is one box, cut out with some context around it
and resized to a fixed square (Lan et al., CVPR 2023, section 3.1 "RoI input generation"):

- **Training crop** (:func:`train_crop_box`): each side moves outward by a random margin, so
  the box fills 1/1.6 to all of the crop and sits at a random place inside it. The margins
  give the MIL loss *negative* rows and columns (outside the box) to learn from; the jitter
  keeps the network from learning "the object is always in the middle".
- **Test crop** (:func:`test_crop_box`): a fixed 1.3x crop centred on the box.
- **Outside the image** (:func:`crop_and_resize`): pixels are *wrapped* from the opposite
  side of the image rather than padded with a constant. The paper's code explains why: a flat
  padding colour forms a strong edge that the CRF loss would happily snap the mask to.
- **Aspect ratio is not kept**: a crop of any shape becomes ``size x size`` (as in the paper).
- **Back to the image** (:func:`paste_mask`): crop-space probabilities are resized to the
  crop's pixel extent and pasted into an empty full-image canvas.

Coordinates are continuous pixel coordinates, ``xyxy``: pixel ``(r, c)`` covers
``[c, c + 1) x [r, r + 1)``, so a COCO ``bbox`` ``[x, y, w, h]`` is ``[x, y, x + w, y + h]``.
A crop is cut at whole pixels (:func:`pixel_bounds`, snapped outward so the box always lies
inside); every function here snaps the same way, so cutting and pasting agree exactly.

Pure numpy/torch: no Lightning, usable from data loading, training, evaluation and labelling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "box_mask_in_crop",
    "crop_and_resize",
    "paste_mask",
    "pixel_bounds",
    "test_crop_box",
    "train_crop_box",
]

BoxLike = Sequence[float] | np.ndarray | torch.Tensor
_SNAP_EPS = 1e-6  # float noise (10.0000001) must not add a whole pixel row to a crop


def _as_box(box_xyxy: BoxLike) -> np.ndarray:
    box = np.asarray(box_xyxy.tolist() if isinstance(box_xyxy, torch.Tensor) else box_xyxy, dtype=np.float64)
    if box.shape != (4,):
        raise ValueError(f"a box is 4 numbers (x0, y0, x1, y1), got shape {box.shape}")
    if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"box {box.tolist()} is not finite or has zero area (need x1 > x0 and y1 > y0)")
    return box


def train_crop_box(
    box_xyxy: BoxLike, margin_range: tuple[float, float] = (0.0, 1.2), rng: np.random.Generator | None = None
) -> np.ndarray:
    """A randomly enlarged and shifted crop around a box (paper: ``RandomCropV3``).

    Each side draws a margin ``m ~ U(low, high)``; each axis draws one gate ``g ~ U(0, 1)``
    that splits the axis' enlargement between its two sides (left/top get ``m * g``,
    right/bottom ``m * (1 - g)``). A side then moves outward by ``margin * half the box size``.
    With the paper's ``[0, 1.2]`` the crop is 1.0-1.6x the box per axis and the box lands
    anywhere from the crop's left edge to its right edge. Exactly six numbers are drawn from
    ``rng`` per call, so later draws of a sample never depend on these values.

    Returns:
        float64 ``[x0, y0, x1, y1]`` in image pixels (may extend past the image).
    """
    box = _as_box(box_xyxy)
    rng = rng if rng is not None else np.random.default_rng()
    low, high = float(margin_range[0]), float(margin_range[1])
    margins = rng.uniform(low, high, size=4)  # left, top, right, bottom
    gates = rng.uniform(0.0, 1.0, size=2)  # x, y
    half_w, half_h = (box[2] - box[0]) / 2.0, (box[3] - box[1]) / 2.0
    return np.array(
        [
            box[0] - margins[0] * gates[0] * half_w,
            box[1] - margins[1] * gates[1] * half_h,
            box[2] + margins[2] * (1.0 - gates[0]) * half_w,
            box[3] + margins[3] * (1.0 - gates[1]) * half_h,
        ]
    )


def test_crop_box(box_xyxy: BoxLike, test_margin: float = 0.6) -> np.ndarray:
    """The deterministic evaluation crop, centred on the box (paper: ``RandomCropV2``, random=False).

    Each side gets the margin ``0.5 * test_margin`` in the same units as training (a fraction
    of *half* the box size), i.e. moves out by ``test_margin / 4`` of the box size: the
    paper's 0.6 gives a crop 1.3x the box per axis, the mean size of a training crop.
    """
    box = _as_box(box_xyxy)
    side = 0.5 * float(test_margin)
    half_w, half_h = (box[2] - box[0]) / 2.0, (box[3] - box[1]) / 2.0
    return np.array([box[0] - side * half_w, box[1] - side * half_h, box[2] + side * half_w, box[3] + side * half_h])


# The name starts with `test_`: tell pytest it is no test when a test module imports it.
test_crop_box.__test__ = False  # type: ignore[attr-defined]


def pixel_bounds(crop_xyxy: BoxLike) -> tuple[int, int, int, int]:
    """Whole-pixel ``(x0, y0, x1, y1)`` of a crop, snapped outward (at least one pixel each way).

    Outward, so the crop never loses part of the box it was made for.
    """
    crop = _as_box(crop_xyxy)
    x0, y0 = math.floor(crop[0] + _SNAP_EPS), math.floor(crop[1] + _SNAP_EPS)
    x1, y1 = math.ceil(crop[2] - _SNAP_EPS), math.ceil(crop[3] - _SNAP_EPS)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _resize(array: torch.Tensor, size: tuple[int, int], mode: Literal["bilinear", "nearest"]) -> torch.Tensor:
    """Resize ``[C, h, w]`` float to ``[C, *size]``.

    Bilinear with antialiasing when shrinking, like PIL's resize that the paper uses, so a big
    crop does not alias into a noisy small one.
    """
    batch = array.unsqueeze(0)
    if mode == "nearest":
        return F.interpolate(batch, size=size, mode="nearest-exact")[0]
    shrinking = size[0] < array.shape[-2] or size[1] < array.shape[-1]
    return F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=shrinking)[0]


def crop_and_resize(
    image: np.ndarray,
    crop_xyxy: BoxLike,
    size: int,
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> np.ndarray:
    """Cut ``crop_xyxy`` out of ``image`` (wrapping around the borders) and resize it to ``size x size``.

    Args:
        image: ``HxWxC`` or ``HxW``, uint8 or float (a binary mask is passed as float or bool).
        crop_xyxy: the crop in image pixels; it may extend past any border (see :func:`pixel_bounds`).
        size: output side; the crop's aspect ratio is not kept (paper).
        mode: ``bilinear`` (images, soft masks) or ``nearest`` (label maps).

    Returns:
        float32 ``size x size [x C]`` in the input's value range (uint8 in, 0..255 floats out).

    Pixels outside the image come from the opposite side (``np.take(mode="wrap")``): a crop
    reaching 3 px past the left edge shows the image's 3 rightmost columns there.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"image must be HxW or HxWxC, got shape {array.shape}")
    x0, y0, x1, y1 = pixel_bounds(crop_xyxy)
    rows = np.arange(y0, y1)
    cols = np.arange(x0, x1)
    patch = np.take(np.take(array, rows, axis=0, mode="wrap"), cols, axis=1, mode="wrap")
    channels_last = patch.ndim == 3
    tensor = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))
    tensor = tensor.permute(2, 0, 1) if channels_last else tensor.unsqueeze(0)
    resized = _resize(tensor, (int(size), int(size)), mode)
    out = resized.permute(1, 2, 0) if channels_last else resized[0]
    return out.contiguous().numpy()


def _coverage(start: float, stop: float, size: int) -> np.ndarray:
    """Fraction of each of ``size`` unit cells ``[i, i + 1)`` that lies inside ``[start, stop)``."""
    cells = np.arange(size, dtype=np.float64)
    return np.clip(np.minimum(cells + 1.0, stop) - np.maximum(cells, start), 0.0, 1.0)


def box_mask_in_crop(box_xyxy: BoxLike, crop_xyxy: BoxLike, size: int) -> np.ndarray:
    """The filled box rectangle as seen in a ``size x size`` crop: float32, 1 inside, 0 outside.

    Border cells get the fraction of their area the box covers, which is what resizing an
    image-space box mask with area averaging would give, without building the big mask.
    This rectangle is the only "mask" MAL ever learns from (the MIL bags; issue #2 of the
    paper's repository: no ground-truth mask is used).
    """
    box = _as_box(box_xyxy)
    x0, y0, x1, y1 = pixel_bounds(crop_xyxy)
    scale_x, scale_y = size / (x1 - x0), size / (y1 - y0)
    cov_x = _coverage((box[0] - x0) * scale_x, (box[2] - x0) * scale_x, size)
    cov_y = _coverage((box[1] - y0) * scale_y, (box[3] - y0) * scale_y, size)
    return np.outer(cov_y, cov_x).astype(np.float32)


def paste_mask(crop_probs: np.ndarray | torch.Tensor, crop_xyxy: BoxLike, image_hw: tuple[int, int]) -> np.ndarray:
    """Put crop-space probabilities back into a zero ``[H, W]`` canvas of the full image.

    The ``[s, s]`` map is resized (bilinear) to the crop's whole-pixel extent, the same extent
    :func:`crop_and_resize` cut, and the part inside the image is pasted. Parts of the crop
    outside the image are dropped, never wrapped: there the crop showed borrowed pixels.

    Returns:
        float32 ``[H, W]``.
    """
    probs = (
        crop_probs.detach().float().cpu()
        if isinstance(crop_probs, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(crop_probs, dtype=np.float32))
    )
    if probs.ndim != 2:
        raise ValueError(f"crop_probs must be [s, s], got shape {tuple(probs.shape)}")
    height, width = int(image_hw[0]), int(image_hw[1])
    x0, y0, x1, y1 = pixel_bounds(crop_xyxy)
    canvas = np.zeros((height, width), dtype=np.float32)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if ix1 <= ix0 or iy1 <= iy0:
        return canvas  # the crop lies entirely outside the image
    resized = _resize(probs.unsqueeze(0), (y1 - y0, x1 - x0), "bilinear")[0].numpy()
    canvas[iy0:iy1, ix0:ix1] = resized[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    return canvas
