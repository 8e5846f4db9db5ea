"""COCO masks: compressed RLE in and out, polygons in.

Encoding goes through pycocotools, so the ``counts`` strings are exactly what every
COCO reader (and :func:`components.data.coco.encode_rle`) produces. Decoding checks
the RLE *before* handing it to pycocotools: pycocotools decodes an RLE whose runs do
not add up to ``height * width`` without complaint, into partly uninitialised memory,
so a damaged or mis-sized mask would come back as random pixels instead of an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from components.labeling.errors import LabelingError


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE ``{"size": [h, w], "counts": str}`` of a 2-D mask (non-zero = foreground).

    ``counts`` is decoded to ASCII text so the result goes straight into JSON.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise LabelingError(f"a mask must be 2-D (HxW), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(bool, copy=False).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The boolean ``HxW`` mask of a COCO RLE (compressed string or uncompressed list ``counts``).

    Raises :class:`LabelingError` when the RLE is malformed or its runs do not cover
    exactly ``size``; the caller adds which annotation and file it came from.
    """
    height, width = _size(rle)
    counts = rle.get("counts")
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        runs = _string_runs(counts)
        compressed = {"size": [height, width], "counts": counts.encode("ascii")}
    elif isinstance(counts, list) and all(_is_int(c) for c in counts):
        runs = [int(c) for c in counts]
        compressed = None
    else:
        raise LabelingError("RLE 'counts' must be a COCO string or a list of integers")
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise LabelingError(f"RLE runs cover {sum(runs)} pixels, its size {height}x{width} has {height * width}")
    if height * width == 0:
        return np.zeros((height, width), dtype=bool)
    if compressed is None:
        compressed = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    return mask_utils.decode(compressed).astype(bool)


def annotation_mask(annotation: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """The boolean mask of a COCO annotation's ``segmentation``: polygons, RLE or uncompressed RLE.

    Polygons are rasterised by pycocotools at ``height x width``; an RLE must already have
    that size (a mask of another image size is an error, not something to resize). An
    empty polygon list is an empty mask.
    """
    label = f"annotation {annotation.get('id', '?')}"
    segmentation = annotation.get("segmentation")
    if segmentation is None:
        raise LabelingError(f"{label}: no 'segmentation'")
    if isinstance(segmentation, list):
        return _polygon_mask(label, segmentation, height, width)
    if not isinstance(segmentation, Mapping):
        raise LabelingError(f"{label}: 'segmentation' is neither polygons nor an RLE")
    try:
        size = _size(segmentation)
        if size != (height, width):
            raise LabelingError(f"RLE size {size[0]}x{size[1]}, the image is {height}x{width}")
        return decode_rle(segmentation)
    except LabelingError as error:
        raise LabelingError(f"{label}: {error}") from None


def _polygon_mask(label: str, polygons: list[Any], height: int, width: int) -> np.ndarray:
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        # frPyObjects takes a 4-number list for a bbox, so a 2-point "polygon" would be misread.
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise LabelingError(f"{label}: a polygon needs an even number (>= 6) of coordinates")
        if not all(_is_number(v) and np.isfinite(v) for v in polygon):
            raise LabelingError(f"{label}: polygon coordinates must be finite numbers")
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _size(rle: Mapping[str, Any]) -> tuple[int, int]:
    size = rle.get("size") if isinstance(rle, Mapping) else None
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)):
        raise LabelingError(f"RLE 'size' must be [height, width], got {size!r}")
    return int(size[0]), int(size[1])


def _string_runs(counts: str) -> list[int]:
    """Run lengths of COCO's compressed ``counts`` text (the inverse of its 5-bit LEB encoding).

    From the 4th run on a value is stored as the difference to the run two back, as
    pycocotools' ``rleFrString`` does.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise LabelingError("RLE 'counts' string ends inside a number")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise LabelingError(f"RLE 'counts' has a character outside COCO's alphabet: {counts[position]!r}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift  # sign-extend
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
