"""Tiny datasets in every source format, for the source readers' and prepare's tests.

Each ``write_*`` generator writes a few seeded noise images into ``root`` in one format
(:mod:`components.data.sources`) and returns a :class:`Written` that says what a correct
reader must find there: the record names, their splits, labels, boxes and masks in
source pixels. Images are deliberately not square (and never the prepared size), so
prepare's resizing and box scaling are exercised; every image has its own seed, so a
wrong pairing shows as different pixels.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from components.data.sources.options import OPTIONS_FILE, SourceOptions

BoxSpec = tuple[float, float, float, float, str]
"""``(x1, y1, x2, y2, class)`` in source pixels, ``x2``/``y2`` exclusive."""


@dataclass
class Written:
    """What a generator wrote, keyed by the record name a reader must give each part."""

    root: Path
    size: tuple[int, int]
    """``(width, height)`` of every image."""
    splits: dict[str, str | None]
    """The source's own split of each record (``None``: the source gives none)."""
    labels: dict[str, str]
    """The final label: ``good``, ``defect`` (a TAO or pairs mask) or the class name."""
    images: dict[str, Path] = field(default_factory=dict)
    """The test image of each record (for tao-classify: the one under the first light)."""
    boxes: dict[str, list[BoxSpec]] = field(default_factory=dict)
    outlines: dict[str, list[np.ndarray | None]] = field(default_factory=dict)
    """COCO: per record, the source-size outline of each box (``None``: box only)."""
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    """Boolean change mask of each record that has a mask file (source pixels)."""
    lights: tuple[str, ...] = ()
    options: SourceOptions = field(default_factory=SourceOptions)
    """The reader options this layout needs (also written to ``inspectops-source.json``)."""

    def names(self, split: str | None = None) -> list[str]:
        """Record names, sorted; only those of ``split`` when given."""
        return sorted(n for n, s in self.splits.items() if split is None or s == split)


def noise(seed: int, size: tuple[int, int]) -> np.ndarray:
    """``height x width x 3`` uint8 noise from its own seed (``size`` is ``(width, height)``)."""
    width, height = size
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rect_mask(size: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean ``height x width`` mask with the ``(x1, y1, x2, y2)`` rectangles set."""
    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in rects:
        mask[y1:y2, x1:x2] = True
    return mask


def write_options(root: Path, fmt: str, options: SourceOptions) -> Path:
    """The options file ``inspectops data import`` leaves in a source folder."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / OPTIONS_FILE
    path.write_text(json.dumps({"format": fmt, "options": options.to_json()}, indent=1))
    return path


# ---------------------------------------------------------------- TAO segmentation


def write_tao_segment(
    root: Path,
    n_train: int = 6,
    n_val: int = 3,
    mask_values: int = 255,
    ext: str = ".png",
    size: tuple[int, int] = (48, 40),
    prefix: str = "part_",
    seed: int = 0,
) -> Written:
    """TAO ChangeNet-Segmentation: ``A/``, ``B/``, ``label/``, ``list/{train,val}.txt``.

    Odd-numbered parts are defects with one rectangle in their mask (0/``mask_values``:
    255, or 1 as TAO allows); the others have an all-zero mask (good parts). Images use
    ``ext`` (``.jpg`` tests lossy sources), masks are always PNG. Every third list entry
    is written with its extension, the others bare, and each list ends with a blank line.
    """
    written = Written(root=root, size=size, splits={}, labels={})
    entries: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(n_train + n_val):
        name = f"{prefix}{i:03d}"
        split = "train" if i < n_train else "val"
        x1, y1 = 4 + 2 * (i % 5), 6 + 2 * (i % 3)
        mask = rect_mask(size, (x1, y1, x1 + 14, y1 + 10)) if i % 2 else rect_mask(size)
        written.images[name] = save(root / "A" / f"{name}{ext}", noise(seed + 2 * i, size))
        save(root / "B" / f"{name}{ext}", noise(seed + 2 * i + 1, size))
        save(root / "label" / f"{name}.png", mask.astype(np.uint8) * mask_values)
        entries[split].append(f"{name}{ext}" if i % 3 == 0 else name)
        written.splits[name] = split
        written.labels[name] = "defect" if mask.any() else "good"
        written.masks[name] = mask
    for split, lines in entries.items():
        (root / "list").mkdir(parents=True, exist_ok=True)
        (root / "list" / f"{split}.txt").write_text("\n".join(lines) + "\n\n")
    return written


# ---------------------------------------------------------------- TAO classification


TAO_LABELS = ("PASS", "NO_PASS", "PASS", "Missing Part")
"""Cycled over the rows: ``PASS`` is good, anything else a defect class (lower-cased)."""


def tao_class(label: str) -> str:
    return "good" if label == "PASS" else label.replace(" ", "_").lower()


def write_tao_classify(
    root: Path,
    n_train: int = 6,
    n_val: int = 3,
    lights: tuple[str, ...] = ("UniformLight", "WhiteLight"),
    split_csvs: bool = True,
    num_golden: int = 1,
    size: tuple[int, int] = (64, 48),
    seed: int = 100,
) -> Written:
    """TAO Optical Inspection: ``images/<input_path>/<object>_<Light>.png`` plus CSVs.

    Inputs share two lot folders (``input/lot0``, ``input/lot1``); each object has its own
    golden folder (``golden/<object>``, with sub-folders ``0..k-1`` when ``num_golden > 1``).
    ``split_csvs`` writes ``train.csv`` and ``val.csv``; otherwise one ``dataset.csv``
    (the reader then leaves the split to the seed). Labels cycle through :data:`TAO_LABELS`.
    """
    written = Written(root=root, size=size, splits={}, labels={}, lights=lights)
    rows: dict[str, list[dict[str, str]]] = {}
    images = root / "images"
    for i in range(n_train + n_val):
        name = f"obj_{i:03d}"
        split = "train" if i < n_train else "val"
        label = TAO_LABELS[i % len(TAO_LABELS)]
        row = {"input_path": f"input/lot{i % 2}", "golden_path": f"golden/{name}", "label": label, "object_name": name}
        for k, light in enumerate(lights):
            path = save(images / row["input_path"] / f"{name}_{light}.png", noise(seed + 100 * i + k, size))
            written.images.setdefault(name, path)
            for g in range(num_golden):
                folder = images / row["golden_path"] / (str(g) if num_golden > 1 else "")
                save(folder / f"{name}_{light}.png", noise(seed + 100 * i + 10 * (g + 1) + k, size))
        rows.setdefault(split if split_csvs else "dataset", []).append(row)
        written.splits[name] = split if split_csvs else None
        written.labels[name] = tao_class(label)
    for stem, members in rows.items():
        with (root / f"{stem}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["input_path", "golden_path", "label", "object_name"])
            writer.writeheader()
            writer.writerows(members)
    return written


# ---------------------------------------------------------------- COCO


COCO_CATEGORIES = [{"id": 7, "name": "Scratch"}, {"id": 3, "name": "dent"}]
"""Source ids that are neither sorted nor from 1, and a capitalised name: prepare renumbers."""


def _rle(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    runs, current, count = [], False, 0
    for value in mask.flatten(order="F"):
        if bool(value) != current:
            runs.append(count)
            current, count = bool(value), 0
        count += 1
    runs.append(count)
    return {"size": list(mask.shape), "counts": runs}


def write_coco(root: Path, split_files: bool = True, size: tuple[int, int] = (60, 44), seed: int = 200) -> Written:
    """``images/`` and COCO instances: ``train.json``/``val.json`` or one ``instances.json``.

    Train: a box-only scratch, a polygon dent, a compressed-RLE scratch, an image without
    annotations (good) and ``sub/img_004`` with two instances (a box-only dent and an
    uncompressed-RLE scratch). Val: a polygon scratch and a good image.
    """
    from pycocotools import mask as mask_utils

    width, height = size
    written = Written(root=root, size=size, splits={}, labels={}, options=SourceOptions())
    polygon = [[10.0, 8.0, 30.0, 8.0, 30.0, 24.0, 10.0, 24.0]]  # a 20 x 16 rectangle
    polygon_mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, height, width))).astype(bool)
    blob = rect_mask(size, (20, 10, 44, 30))
    strip = rect_mask(size, (2, 30, 50, 36))
    # (file_name, split, [(category id, [x, y, w, h], segmentation, outline)])
    plan: list[tuple[str, str, list[tuple[int, list[float], Any, np.ndarray | None]]]] = [
        ("img_000.png", "train", [(7, [5.0, 6.0, 18.0, 12.5], None, None)]),
        ("img_001.png", "train", [(3, [10.0, 8.0, 20.0, 16.0], polygon, polygon_mask)]),
        ("img_002.png", "train", [(7, [20.0, 10.0, 24.0, 20.0], _rle(blob), blob)]),
        ("img_003.png", "train", []),
        (
            "sub/img_004.png",
            "train",
            [(3, [40.0, 2.0, 16.0, 10.0], None, None), (7, [2.0, 30.0, 48.0, 6.0], _rle(strip, False), strip)],
        ),
        ("img_005.png", "val", [(7, [10.0, 8.0, 20.0, 16.0], polygon, polygon_mask)]),
        ("img_006.png", "val", []),
    ]
    payloads: dict[str, dict[str, Any]] = {}
    names = {c["id"]: str(c["name"]).lower() for c in COCO_CATEGORIES}
    for number, (file_name, split, instances) in enumerate(plan):
        name = file_name.removesuffix(".png").replace("/", "__")
        written.images[name] = save(root / "images" / file_name, noise(seed + number, size))
        payload = payloads.setdefault(
            split if split_files else "instances",
            {"images": [], "annotations": [], "categories": COCO_CATEGORIES},
        )
        image_id = 10 + number  # not 1..n: readers must match on the id
        payload["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for cid, (x, y, w, h), segmentation, _ in instances:
            annotation: dict[str, Any] = {
                "id": len(payload["annotations"]) + 1,
                "image_id": image_id,
                "category_id": cid,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if segmentation is not None:
                annotation["segmentation"] = segmentation
            payload["annotations"].append(annotation)
        written.splits[name] = split if split_files else None
        written.labels[name] = names[instances[0][0]] if instances else "good"
        written.boxes[name] = [(x, y, x + w, y + h, names[cid]) for cid, (x, y, w, h), _, _ in instances]
        written.outlines[name] = [outline for *_, outline in instances]
    for stem, payload in payloads.items():
        (root / f"{stem}.json").write_text(json.dumps(payload))
    return written


# ---------------------------------------------------------------- golden/test pairs


SPLIT_PATTERNS = SourceOptions(
    test_pattern="{split}/{id}_test.png",
    golden_pattern="{split}/{id}_golden.png",
    box_pattern="{split}/{id}.txt",
    mask_pattern="{split}/{id}_mask.png",
)
"""Pair patterns with the source's own split as a folder."""


def write_pairs(
    root: Path,
    n_good: int = 4,
    n_boxed: int = 2,
    n_masked: int = 2,
    n_both: int = 2,
    split_dirs: bool = False,
    size: tuple[int, int] = (40, 48),
    classes: tuple[str, ...] = ("scratch", "dent"),
    seed: int = 300,
) -> Written:
    """Golden/test pairs: ``{id}_test.png``, ``{id}_golden.png``, ``{id}.txt``, ``{id}_mask.png``.

    Kinds, in id order: good pairs (no box file, no mask), boxed pairs (one or two boxes,
    classes cycling through ``classes``, no mask: their pixels are unknown), masked pairs
    (a rectangle mask, no boxes: the label ``defect`` comes from the mask) and pairs with
    both (one box around the mask's rectangle). Box files carry a comment and a blank line.
    ``split_dirs`` puts every pair under ``train/``, ``val/`` or ``test/`` (cycling) and
    writes :data:`SPLIT_PATTERNS` into ``inspectops-source.json``; record names are then
    ``<split>_<id>``.
    """
    written = Written(root=root, size=size, splits={}, labels={})
    kinds = ["good"] * n_good + ["boxed"] * n_boxed + ["masked"] * n_masked + ["both"] * n_both
    cycle = ("train", "train", "val", "test")
    for i, kind in enumerate(kinds):
        pair_id = f"p{i:03d}"
        split = cycle[i % len(cycle)] if split_dirs else None
        folder = root / split if split else root
        name = f"{split}_{pair_id}" if split else pair_id
        written.images[name] = save(folder / f"{pair_id}_test.png", noise(seed + 2 * i, size))
        save(folder / f"{pair_id}_golden.png", noise(seed + 2 * i + 1, size))
        x1, y1 = 3 + (i % 4), 5 + 2 * (i % 3)
        rect = (x1, y1, x1 + 12, y1 + 9)
        boxes: list[BoxSpec] = []
        if kind == "boxed":
            boxes.append((x1 + 0.5, y1, x1 + 12.5, y1 + 9, classes[i % len(classes)]))
            if i % 2:
                boxes.append((20, 30, 36, 44, classes[(i + 1) % len(classes)]))
        if kind == "both":
            x2, y2 = rect[2], rect[3]
            boxes.append((float(x1), float(y1), float(x2), float(y2), classes[i % len(classes)]))
        if boxes:
            lines = ["# x1,y1,x2,y2,class", *(",".join(f"{v:g}" for v in b[:4]) + f",{b[4]}" for b in boxes), ""]
            (folder / f"{pair_id}.txt").write_text("\n".join(lines) + "\n")
        if kind in ("masked", "both"):
            mask = rect_mask(size, rect)
            save(folder / f"{pair_id}_mask.png", mask.astype(np.uint8) * 255)
            written.masks[name] = mask
        written.splits[name] = split
        written.labels[name] = boxes[0][4] if boxes else "defect" if kind == "masked" else "good"
        written.boxes[name] = boxes
    if split_dirs:
        written.options = SPLIT_PATTERNS
        write_options(root, "pairs", SPLIT_PATTERNS)
    return written


# ---------------------------------------------------------------- class folders


def write_class_folders(
    root: Path,
    n_good: int = 6,
    n_per_defect: int = 3,
    classes: tuple[str, ...] = ("scratch", "dent"),
    split_dirs: bool = False,
    good_folder: str = "good",
    size: tuple[int, int] = (40, 32),
    seed: int = 400,
) -> Written:
    """Class folders: ``<good_folder>/`` and one folder per defect class, no masks, boxes or goldens.

    Every third image is 8 px wider and taller (mixed sizes: prepare resizes), extensions cycle
    through ``.png``, ``.jpg`` and ``.bmp``, and the last image of the first defect class lies in
    a nested ``lot 2/`` folder (a space: names are made file-safe). ``split_dirs`` puts the class
    folders under ``train/`` and ``val/`` (every third image of each class in val, the good
    ones needing at least three train images); record names are then ``<split>__<class>__<stem>``.
    ``labels`` holds each record's class; ``size`` the common size (not every image's).
    """
    written = Written(root=root, size=size, splits={}, labels={})
    plan = [(good_folder, "good", n_good)] + [(c, c.lower(), n_per_defect) for c in classes]
    number = 0
    for folder, label, count in plan:
        for i in range(count):
            split = ("val" if i % 3 == 2 else "train") if split_dirs else None
            base = root / split if split else root
            nested = bool(classes) and folder == classes[0] and i == count - 1
            stem = f"{label}_{i:03d}"
            ext = (".png", ".jpg", ".bmp")[i % 3]
            relative = Path(folder) / ("lot 2" if nested else "") / f"{stem}{ext}"
            shape = (size[0] + 8, size[1] + 8) if number % 3 == 2 else size
            parts = ([split] if split else []) + list(relative.with_suffix("").parts)
            name = "__".join(part.replace(" ", "_") for part in parts)
            written.images[name] = save(base / relative, noise(seed + number, shape))
            written.splits[name] = split
            written.labels[name] = label
            number += 1
    return written
