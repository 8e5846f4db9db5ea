"""COCO instance annotations from binary defect masks, for the mask auto-labeler.

Each 8-connected region of a defect mask becomes one instance (a defect image can show
several separate scratches), with its bbox, area and a compressed COCO RLE. Regions
smaller than :data:`MIN_REGION_AREA` pixels are dropped: at the prepared resolution
they are nearest-neighbour resize crumbs, not defects, and would be unlearnable boxes.

``file_name`` of every image is the path of its segmentation A image *relative to the
datasets root* (e.g. ``segment/A/<name>.png``), so one JSON serves any checkout;
``golden_file_name`` (an extra key COCO readers ignore) points at its B image.

pycocotools does the RLE when installed; otherwise a local encoder writes the same
string, so the output does not depend on which is present.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_REGION_AREA = 4
"""Regions with fewer pixels than this are not annotated."""

SUPERCATEGORY = "defect"


def category_ids(defect_kinds: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Stable ids: defect kinds in sorted order, numbered from 1 (0 is background by convention)."""
    return {kind: index for index, kind in enumerate(sorted(set(defect_kinds)), start=1)}


def categories(defect_kinds: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"id": cid, "name": kind, "supercategory": SUPERCATEGORY} for kind, cid in category_ids(defect_kinds).items()
    ]


# ---------------------------------------------------------------- connected components


def _label_scipy(mask: np.ndarray) -> tuple[np.ndarray, int] | None:
    try:
        from scipy import ndimage
    except ImportError:
        return None
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return labels, int(count)


def _label_bfs(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labelling in raster order (the same numbering scipy gives); fallback only."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    height, width = mask.shape
    count = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if labels[y, x]:
            continue
        count += 1
        labels[y, x] = count
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for ny in range(max(cy - 1, 0), min(cy + 2, height)):
                for nx in range(max(cx - 1, 0), min(cx + 2, width)):
                    if mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = count
                        queue.append((ny, nx))
    return labels, count


def connected_regions(mask: np.ndarray, min_area: int = MIN_REGION_AREA) -> tuple[list[np.ndarray], int]:
    """Boolean masks of the 8-connected regions of ``mask`` with ``>= min_area`` pixels.

    Returns ``(regions, skipped)``; regions come in raster order of their first pixel.
    """
    mask = np.asarray(mask, dtype=bool)
    labelled = _label_scipy(mask) or _label_bfs(mask)
    labels, count = labelled
    regions: list[np.ndarray] = []
    skipped = 0
    for index in range(1, count + 1):
        region = labels == index
        if int(region.sum()) >= min_area:
            regions.append(region)
        else:
            skipped += 1
    return regions, skipped


def bbox_xywh(region: np.ndarray) -> list[int]:
    """COCO ``[x, y, width, height]`` of the pixels of ``region`` (inclusive extent)."""
    ys, xs = np.nonzero(region)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


# ---------------------------------------------------------------- RLE


def _run_lengths(mask: np.ndarray) -> list[int]:
    """Column-major run lengths starting with a (possibly empty) run of zeros: COCO's order."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs]


def _compress_counts(runs: list[int]) -> str:
    """COCO's text form of run lengths: from the 4th run on, store the difference to the run
    two back (same-value runs are similar in size), then write each number as little-endian
    5-bit groups with a continuation flag (0x20), offset into printable ASCII by 48."""
    chars: list[str] = []
    for index, run in enumerate(runs):
        value = run - runs[index - 2] if index > 2 else run
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: negative differences end at -1, not 0
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return "".join(chars)


def _encode_local(mask: np.ndarray) -> dict[str, Any]:
    height, width = mask.shape
    return {"size": [int(height), int(width)], "counts": _compress_counts(_run_lengths(mask))}


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE ``{"size": [h, w], "counts": str}`` of a binary ``HxW`` mask."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        return _encode_local(mask)
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# ---------------------------------------------------------------- dataset builder


@dataclass
class CocoBuilder:
    """Accumulates one split's images and instances; ids are assigned in insertion order from 1."""

    defect_kinds: tuple[str, ...]
    min_area: int = MIN_REGION_AREA
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    skipped_regions: int = 0

    def add(self, file_name: str, golden_file_name: str, label: str, mask: np.ndarray) -> int:
        """Add one image with its (resized, boolean) mask; a good image gets no instances."""
        height, width = mask.shape
        image_id = len(self.images) + 1
        self.images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "golden_file_name": golden_file_name,
                "width": int(width),
                "height": int(height),
            }
        )
        if label in self.defect_kinds:
            self._add_instances(image_id, category_ids(self.defect_kinds)[label], mask)
        return image_id

    def _add_instances(self, image_id: int, category_id: int, mask: np.ndarray) -> None:
        regions, skipped = connected_regions(mask, self.min_area)
        self.skipped_regions += skipped
        for region in regions:
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox_xywh(region),
                    "area": int(region.sum()),
                    "iscrowd": 0,
                    "segmentation": encode_rle(region),
                }
            )

    def to_dict(self, description: str) -> dict[str, Any]:
        """The COCO JSON payload (``info`` and ``licenses`` included: some readers require them)."""
        return {
            "info": {"description": description, "version": "1.0"},
            "licenses": [],
            "categories": categories(self.defect_kinds),
            "images": self.images,
            "annotations": self.annotations,
        }
