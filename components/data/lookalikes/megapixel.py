"""Multi-megapixel ChangeNet-Segmentation look-alike: aligned pairs with defects a few pixels wide.

Real inspection cameras give 1-20 megapixels, and a scratch 3 pixels wide on a 2048-pixel image
is 0.4 pixels once the pair is resized to 256: it vanishes. :func:`write_megapixel` writes such
data in the ``tao-segment`` layout (:mod:`components.data.sources.tao_segment`), so the
native-resolution path (``data.tiling``) can be measured against resizing on it:

::

    <root>/A/<name>.png       test images (``size`` = width x height, RGB)
    <root>/B/<name>.png       their goldens (the same board, other sensor noise and light)
    <root>/label/<name>.png   0/255 change masks
    <root>/list/train.txt     one ``<name>.png`` a line; list/val.txt

Each pair is a textured board (low-frequency shading, a grid of pads and traces, fine grain) seen
twice, exactly aligned, with independent sensor noise and a small brightness change. About a
quarter of the pairs are good; the others carry 1-3 defects on the test image only:

- ``scratch``: a thin line (2-4 px wide, 80-400 px long, slightly bent), darker or brighter;
- ``pit``: a small round pit of about 5 px (4-6 px across).

Names follow ``<kind>_test_<nnnn>`` (``good``, ``scratch``, ``pit``, or ``mixed`` for both), so the
evaluation reports IoU per kind and false alarms on good parts. Everything is drawn from
``numpy.random.default_rng([seed, index])``: the same seed gives the same bytes, and any pair can be
made alone. A 2048x1536 pair takes well under a second to draw and about a second to write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["DEFECT_KINDS", "render_pair", "write_megapixel"]

DEFECT_KINDS = ("scratch", "pit")
GOOD_SHARE = 0.25
"""Share of good pairs (every fourth pair, spread through both splits)."""
_PNG_LEVEL = 1
_BLUR = ImageFilter.GaussianBlur(0.6)
"""Fast PNG compression: these files are an import source, re-encoded by prepare."""


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    grid_h, grid_w = max(2, height // cells), max(2, width // cells)
    coarse = rng.uniform(-1.0, 1.0, size=(grid_h, grid_w)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC))


def _board(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``H x W x 3`` float32 board in [0, 255]: shading, pads, traces and grain."""
    base_colour = np.array([60.0, 95.0, 70.0]) + rng.uniform(-10, 10, size=3)  # PCB-like green-grey
    shade = 18.0 * _smooth_noise(rng, height, width, 256) + 6.0 * _smooth_noise(rng, height, width, 32)
    board = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        board[..., c] = base_colour[c] + shade
    picture = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(picture)
    pitch = int(rng.integers(90, 140))
    pad = int(rng.integers(18, 34))
    off_y, off_x = (int(v) for v in rng.integers(0, pitch, size=2))
    for y in range(off_y - pitch, height, pitch):
        for x in range(off_x - pitch, width, pitch):
            if rng.random() < 0.7:
                draw.rectangle([x, y, x + pad, y + pad], fill=255)  # a pad
            if rng.random() < 0.5:
                draw.line([x + pad // 2, y + pad, x + pad // 2, y + pitch], fill=170, width=int(rng.integers(4, 9)))
            if rng.random() < 0.3:
                draw.line([x + pad, y + pad // 2, x + pitch, y + pad // 2], fill=170, width=int(rng.integers(4, 9)))
    metal = np.asarray(picture, dtype=np.float32) / 255.0
    copper = np.array([185.0, 160.0, 95.0], dtype=np.float32)
    board = board * (1.0 - metal[..., None]) + copper * metal[..., None]
    grain = rng.normal(0.0, 3.0, size=(height, width, 1)).astype(np.float32)
    return board + grain


def _defects(rng: np.random.Generator, height: int, width: int, kinds: tuple[str, ...]) -> np.ndarray:
    """Boolean mask of 1-3 defects of ``kinds`` (thin scratches, ~5 px pits), away from the border."""
    picture = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(picture)
    margin = 40
    count = int(rng.integers(1, 4))
    for i in range(count):
        kind = kinds[i % len(kinds)]
        y, x = float(rng.uniform(margin, height - margin)), float(rng.uniform(margin, width - margin))
        if kind == "scratch":
            length, angle = float(rng.uniform(80, 400)), float(rng.uniform(0, np.pi))
            bend = float(rng.uniform(-0.3, 0.3))
            points = []
            for t in np.linspace(0.0, 1.0, 6):
                a = angle + bend * t
                points.append((x + t * length * np.cos(a), y + t * length * np.sin(a)))
            points = [
                (min(max(px, margin), width - margin), min(max(py, margin), height - margin)) for px, py in points
            ]
            draw.line(points, fill=255, width=int(rng.integers(2, 5)), joint="curve")
        else:
            radius = float(rng.uniform(2.0, 3.0))
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    return np.asarray(picture) > 127


def render_pair(index: int, size: tuple[int, int] = (2048, 1536), seed: int = 0) -> dict[str, Any]:
    """Pair ``index``: ``{"name", "kind", "test", "golden", "mask"}`` (``size`` is width x height)."""
    width, height = size
    rng = np.random.default_rng([int(seed), int(index)])
    good = index % round(1 / GOOD_SHARE) == 0
    kind = "good" if good else str(rng.choice(["scratch", "pit", "mixed"], p=[0.5, 0.3, 0.2]))
    board = _board(rng, height, width)
    golden = board + rng.normal(0.0, 2.0, size=board.shape).astype(np.float32)
    gain = float(rng.uniform(0.95, 1.05))
    test = board * gain + rng.normal(0.0, 2.0, size=board.shape).astype(np.float32)
    if good:
        mask = np.zeros((height, width), dtype=bool)
    else:
        kinds = DEFECT_KINDS if kind == "mixed" else (kind,)
        mask = _defects(rng, height, width, kinds)
        shift = float(rng.choice([-1.0, 1.0])) * float(rng.uniform(45, 70))
        soft = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(_BLUR), dtype=np.float32) / 255.0
        test = test + shift * np.maximum(soft, mask.astype(np.float32))[..., None]
    return {
        "name": f"{kind}_test_{index:04d}",
        "kind": kind,
        "test": _to_u8(test),
        "golden": _to_u8(golden),
        "mask": mask,
    }


def _to_u8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=_PNG_LEVEL)


def write_megapixel(
    root: Path | str, *, n_train: int, n_val: int, size: tuple[int, int] = (2048, 1536), seed: int = 0
) -> dict[str, int]:
    """Write ``n_train + n_val`` pairs of ``size`` (width, height) in the tao-segment layout under ``root``.

    Returns counts: ``train``, ``val``, ``train_defect``, ``val_defect``, ``width``, ``height`` and
    ``defect_pixels`` (all masks together).
    """
    root = Path(root)
    if n_train < 1 or n_val < 1:
        raise ValueError(f"need at least one train and one val pair, got {n_train} and {n_val}")
    lists: dict[str, list[str]] = {"train": [], "val": []}
    counts = {"train": 0, "val": 0, "train_defect": 0, "val_defect": 0, "defect_pixels": 0}
    for index in range(n_train + n_val):
        split = "train" if index < n_train else "val"
        pair = render_pair(index, size, seed)
        name = pair["name"]
        _save(root / "A" / f"{name}.png", pair["test"])
        _save(root / "B" / f"{name}.png", pair["golden"])
        _save(root / "label" / f"{name}.png", pair["mask"].astype(np.uint8) * 255)
        lists[split].append(f"{name}.png")
        counts[split] += 1
        counts[f"{split}_defect"] += int(pair["mask"].any())
        counts["defect_pixels"] += int(pair["mask"].sum())
    (root / "list").mkdir(parents=True, exist_ok=True)
    for split, names in lists.items():
        (root / "list" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return {**counts, "width": int(size[0]), "height": int(size[1])}
