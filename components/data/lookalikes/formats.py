"""Look-alikes of public data sets in the import formats, for tests: what users bring, in miniature.

- :func:`write_change_detection`: a change-detection set in TAO's segmentation layout
  (``A/ B/ label/ list/``, LEVIR-CD as TAO ships it): *every* pair has change, there is no good
  pair and no lighting condition, and the images are not square.
- :func:`write_boxes_only_pairs`: template/test pairs with boxes only, DeepPCB-style
  (``group00041/00041/<id>_temp.jpg``, ``<id>_test.jpg``, ``group00041/00041_not/<id>.txt`` holding
  ``x1 y1 x2 y2 type`` with an integer type 1-6); no mask anywhere; good pairs have no box file
  or an empty one.
- :func:`write_four_light_csv`: TAO's Optical Inspection CSV with four lighting conditions,
  ``PASS`` and defect rows, and a golden per part.

Images are tiny (at most 96 px a side), seeded (numpy's ``default_rng``) and the defects are
visible: a bright blob in the test image exactly where its mask or box says, on a smooth
texture the golden shares, so a one-epoch model has something to learn. Each writer returns a
:class:`Lookalike` saying what it wrote and how to import it (format, reader options, the
``inspectops data import`` flags).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from components.data.sources.options import SourceOptions

__all__ = [
    "FOUR_LIGHTS",
    "Lookalike",
    "write_boxes_only_pairs",
    "write_change_detection",
    "write_four_light_csv",
]

FOUR_LIGHTS = ("LowAngleLight", "SolderLight", "UniformLight", "WhiteLight")
"""TAO's four lighting conditions (:data:`components.config.LIGHTING_CONDITIONS`)."""

BoxSpec = tuple[int, int, int, int, str]
"""``(x1, y1, x2, y2, class)`` in source pixels, ``x2``/``y2`` exclusive."""


@dataclass
class Lookalike:
    """What a look-alike writer wrote, and how to import it."""

    root: Path
    format: str
    """The ``--format`` of ``inspectops data import`` (``data.source``)."""
    size: tuple[int, int]
    """``(width, height)`` of every image."""
    options: SourceOptions = field(default_factory=SourceOptions)
    """The reader options the layout needs (pass to ``import_source``)."""
    import_args: tuple[str, ...] = ()
    """The matching ``inspectops data import`` flags, e.g. ``("--box-separator", " ")``."""
    splits: dict[str, str | None] = field(default_factory=dict)
    """Each record's name (as the reader names it) and its split (``None``: drawn by prepare)."""
    labels: dict[str, str] = field(default_factory=dict)
    """``good``, ``defect`` (a mask without a kind) or the class name the reader gives."""
    boxes: dict[str, list[BoxSpec]] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    """Boolean change mask (source pixels) of each record that has a mask file."""
    classes: tuple[str, ...] = ()
    """Defect classes as the datasets spell them (``class_1``, ``defect``, ...)."""
    lights: tuple[str, ...] = ()

    @property
    def records(self) -> int:
        return len(self.splits)

    @property
    def counts(self) -> dict[str, int]:
        """``{"records", "good", "defect", "boxes", "masks"}``."""
        good = sum(label == "good" for label in self.labels.values())
        return {
            "records": self.records,
            "good": good,
            "defect": self.records - good,
            "boxes": sum(len(b) for b in self.boxes.values()),
            "masks": len(self.masks),
        }

    def names(self, split: str | None = None) -> list[str]:
        return sorted(n for n, s in self.splits.items() if split is None or s == split)


# ---------------------------------------------------------------- pixels


def _texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A smooth ``height x width x 3`` float texture in [40, 160]: low-resolution noise, upsampled."""
    width, height = size
    coarse = rng.uniform(40, 160, (max(2, height // 8), max(2, width // 8), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _ellipse(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean ``height x width`` filled ellipse inscribed in ``box`` (``x1, y1, x2, y2``, exclusive)."""
    width, height = size
    x1, y1, x2, y2 = box
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max((x2 - x1) / 2, 0.5), max((y2 - y1) / 2, 0.5)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _pair(
    rng: np.random.Generator, size: tuple[int, int], defect: np.ndarray | None, gain: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(test, golden)`` uint8: a shared texture with its own sensor noise each, a bright blob on ``defect``."""
    base = _texture(rng, size) * gain
    golden = base + rng.normal(0, 3, base.shape)
    test = base + rng.normal(0, 3, base.shape)
    if defect is not None:
        test[defect] = 235.0 + rng.normal(0, 4, (int(defect.sum()), 3))
    return np.clip(test, 0, 255).astype(np.uint8), np.clip(golden, 0, 255).astype(np.uint8)


def _random_box(rng: np.random.Generator, size: tuple[int, int], low: int = 8, high: int = 20) -> tuple[int, ...]:
    width, height = size
    w, h = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
    x1, y1 = int(rng.integers(1, width - w - 1)), int(rng.integers(1, height - h - 1))
    return x1, y1, x1 + w, y1 + h


def _save(path: Path, array: np.ndarray, quality: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if quality is None:
        image.save(path)
    else:
        image.save(path, quality=quality)
    return path


def _check_size(size: tuple[int, int]) -> None:
    if max(size) > 96 or min(size) < 32:
        raise ValueError(f"look-alike images are 32 to 96 px a side, got {size}")


# ---------------------------------------------------------------- TAO segmentation, change detection


def write_change_detection(
    root: Path, n_train: int = 8, n_val: int = 4, size: tuple[int, int] = (96, 80), seed: int = 0
) -> Lookalike:
    """A LEVIR-CD-like change-detection set in TAO's segmentation layout: every pair has change.

    ``A/<name>.png`` (after), ``B/<name>.png`` (before), ``label/<name>.png`` (0/255, one or two
    blobs, never empty), ``list/train.txt`` and ``list/val.txt``; no good pair, no lighting
    condition, ``size`` (``width, height``) not square by default. Import with
    ``--format tao-segment`` and no options; train with ``data.lighting_conditions: [UniformLight]``
    (one unnamed light) and ``segment.train.defect_share: null`` (there is nothing to balance).
    """
    _check_size(size)
    rng = np.random.default_rng(seed)
    written = Lookalike(root=Path(root), format="tao-segment", size=size, classes=("defect",))
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(n_train + n_val):
        name = f"levir_{i:03d}"
        split = "train" if i < n_train else "val"
        mask = _ellipse(size, _random_box(rng, size))
        if i % 3 == 0:
            mask |= _ellipse(size, _random_box(rng, size, 6, 12))
        test, golden = _pair(rng, size, mask)
        _save(root / "A" / f"{name}.png", test)
        _save(root / "B" / f"{name}.png", golden)
        _save(root / "label" / f"{name}.png", mask.astype(np.uint8) * 255)
        lists[split].append(f"{name}.png")
        written.splits[name] = split
        written.labels[name] = "defect"
        written.masks[name] = mask
    (root / "list").mkdir(parents=True, exist_ok=True)
    for split, entries in lists.items():
        (root / "list" / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return written


# ---------------------------------------------------------------- DeepPCB-style boxes-only pairs


def write_boxes_only_pairs(
    root: Path,
    n_defect: int = 12,
    n_good: int = 6,
    size: tuple[int, int] = (64, 64),
    group: str = "00041",
    num_types: int = 6,
    seed: int = 0,
) -> Lookalike:
    """Template/test pairs with boxes only, laid out like DeepPCB.

    ``group<G>/<G>/<id>_temp.jpg`` (the template: the golden), ``group<G>/<G>/<id>_test.jpg`` and
    ``group<G>/<G>_not/<id>.txt``: one ``x1 y1 x2 y2 type`` a line, space-separated, ``type`` an
    integer 1..``num_types`` (the reader names it ``class_<type>``). Defective pairs have one to
    three boxes, each around a bright blob in the test image; good pairs alternate between no box
    file and an empty one. No mask anywhere, no split: prepare draws one (seeded, per class).
    The import options are in :attr:`Lookalike.options` and :attr:`Lookalike.import_args`.
    """
    _check_size(size)
    rng = np.random.default_rng(seed)
    folder, boxes_folder = f"group{group}/{group}", f"group{group}/{group}_not"
    options = SourceOptions(
        test_pattern=f"{folder}/{{id}}_test.jpg",
        golden_pattern=f"{folder}/{{id}}_temp.jpg",
        box_pattern=f"{boxes_folder}/{{id}}.txt",
        mask_pattern=None,
        box_separator=" ",
    )
    written = Lookalike(
        root=Path(root),
        format="pairs",
        size=size,
        options=options,
        import_args=(
            "--test-pattern",
            options.test_pattern,
            "--golden-pattern",
            options.golden_pattern,
            "--box-pattern",
            str(options.box_pattern),
            "--box-separator",
            " ",
        ),
    )
    classes: set[str] = set()
    kinds = ["defect"] * n_defect + ["good"] * n_good
    order = rng.permutation(len(kinds))
    for number, k in enumerate(order):
        pair_id = f"{group}{number:03d}"
        mask = np.zeros((size[1], size[0]), dtype=bool)
        boxes: list[BoxSpec] = []
        if kinds[k] == "defect":
            for _ in range(1 + int(rng.integers(0, 3))):
                x1, y1, x2, y2 = _random_box(rng, size, 6, 16)
                mask |= _ellipse(size, (x1, y1, x2, y2))
                kind = int(rng.integers(1, num_types + 1))
                boxes.append((x1, y1, x2, y2, f"class_{kind}"))
                classes.add(f"class_{kind}")
        test, golden = _pair(rng, size, mask if boxes else None)
        _save(root / folder / f"{pair_id}_test.jpg", test, quality=95)
        _save(root / folder / f"{pair_id}_temp.jpg", golden, quality=95)
        box_file = root / boxes_folder / f"{pair_id}.txt"
        if boxes:
            box_file.parent.mkdir(parents=True, exist_ok=True)
            box_file.write_text(
                "".join(f"{x1} {y1} {x2} {y2} {c.removeprefix('class_')}\n" for x1, y1, x2, y2, c in boxes)
            )
        elif number % 2:
            box_file.parent.mkdir(parents=True, exist_ok=True)
            box_file.write_text("")
        written.splits[pair_id] = None
        written.labels[pair_id] = boxes[0][4] if boxes else "good"
        written.boxes[pair_id] = boxes
    written.classes = tuple(sorted(classes))
    return written


# ---------------------------------------------------------------- TAO Optical Inspection, four lights


def write_four_light_csv(
    root: Path,
    n_train: int = 12,
    n_val: int = 6,
    size: tuple[int, int] = (48, 40),
    lights: tuple[str, ...] = FOUR_LIGHTS,
    defect_labels: tuple[str, ...] = ("Missing", "Shifted"),
    seed: int = 0,
) -> Lookalike:
    """TAO's Optical Inspection layout with four lights: ``train.csv``, ``val.csv`` and ``images/``.

    Rows alternate ``PASS`` and a defect label (cycling through ``defect_labels``); each part has
    ``images/parts/<object>/<object>_<Light>.png`` and its golden
    ``images/golden/<object>/<object>_<Light>.png`` under every light (each light its own gain; a
    defect is the same bright blob under every light). Import with ``--format tao-classify``; set
    ``data.lighting_conditions`` to the four lights (or a subset).
    """
    _check_size(size)
    rng = np.random.default_rng(seed)
    written = Lookalike(root=Path(root), format="tao-classify", size=size, lights=tuple(lights))
    rows: dict[str, list[dict[str, str]]] = {"train": [], "val": []}
    for i in range(n_train + n_val):
        name = f"board_{i:03d}"
        split = "train" if i < n_train else "val"
        label = "PASS" if i % 2 == 0 else defect_labels[(i // 2) % len(defect_labels)]
        mask = _ellipse(size, _random_box(rng, size, 6, 14)) if label != "PASS" else None
        light_seed = int(rng.integers(0, 2**31))
        for k, light in enumerate(lights):
            light_rng = np.random.default_rng([light_seed, k])
            test, golden = _pair(light_rng, size, mask, gain=0.7 + 0.15 * k)
            _save(root / "images" / "parts" / name / f"{name}_{light}.png", test)
            _save(root / "images" / "golden" / name / f"{name}_{light}.png", golden)
        rows[split].append(
            {"input_path": f"parts/{name}", "golden_path": f"golden/{name}", "label": label, "object_name": name}
        )
        written.splits[name] = split
        written.labels[name] = "good" if label == "PASS" else label.lower()
    for split, members in rows.items():
        with (root / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["input_path", "golden_path", "label", "object_name"])
            writer.writeheader()
            writer.writerows(members)
    written.classes = tuple(sorted({label.lower() for label in defect_labels}))
    return written
