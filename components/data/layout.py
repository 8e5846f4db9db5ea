"""The MVTec AD category layout: one reader shared by ingestion, synthesis checks and preparation.

A category folder holds ``train/good/*.png``, ``test/<class>/*.png`` (``good`` or a
defect kind) and ``ground_truth/<defect>/<id>_mask.png``. The synthetic generator may
add ``lights/<Light>/<split>/<class>/<id>.png``: the same part under each of TAO's
lighting conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from components.imageio import ImageReadError, image_size

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"


class LayoutError(ValueError):
    """A category folder that does not follow the MVTec AD layout; the message names the path."""


@dataclass(frozen=True)
class Sample:
    """One raw image of a category."""

    split: str  # "train" or "test"
    label: str  # "good" or the defect kind
    stem: str  # file name without suffix, e.g. "007"
    image: Path
    mask: Path | None  # None for good samples

    @property
    def name(self) -> str:
        """Unique, stable name across the category: ``<label>_<split>_<stem>``."""
        return f"{self.label}_{self.split}_{self.stem}"

    @property
    def is_good(self) -> bool:
        return self.label == GOOD


@dataclass(frozen=True)
class CategoryIndex:
    root: Path
    samples: tuple[Sample, ...]
    lights: tuple[str, ...] = field(default_factory=tuple)

    @property
    def train_good(self) -> list[Sample]:
        return [s for s in self.samples if s.split == "train"]

    @property
    def test(self) -> list[Sample]:
        return [s for s in self.samples if s.split == "test"]

    @property
    def defect_kinds(self) -> list[str]:
        return sorted({s.label for s in self.samples if not s.is_good})

    def light_image(self, sample: Sample, light: str) -> Path:
        """Path of ``sample`` rendered under ``light`` (only for categories with a ``lights/`` tree)."""
        return self.root / "lights" / light / sample.split / sample.label / sample.image.name


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_category(root: Path | str, check_sizes: bool = True) -> CategoryIndex:
    """Index a category folder and check it: every defect image has a mask of its size.

    Raises :class:`LayoutError` naming the first missing folder, missing mask or size mismatch.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: category folder not found")
    train_good = root / "train" / GOOD
    if not train_good.is_dir():
        raise LayoutError(f"{train_good}: missing; an MVTec AD category needs train/good")
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise LayoutError(f"{test_dir}: missing; an MVTec AD category needs test/<class>")

    samples: list[Sample] = [Sample("train", GOOD, p.stem, p, None) for p in _images(train_good)]
    if not samples:
        raise LayoutError(f"{train_good}: holds no images")
    for class_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        label = class_dir.name
        for image in _images(class_dir):
            mask = None
            if label != GOOD:
                mask = root / "ground_truth" / label / f"{image.stem}_mask.png"
                if not mask.is_file():
                    raise LayoutError(f"{image}: its mask {mask} is missing")
                if check_sizes:
                    try:
                        image_wh, mask_wh = image_size(image), image_size(mask)
                    except ImageReadError as error:
                        raise LayoutError(str(error)) from None
                    if image_wh != mask_wh:
                        raise LayoutError(
                            f"{mask}: mask size {mask_wh[0]}x{mask_wh[1]} differs from its image "
                            f"{image} ({image_wh[0]}x{image_wh[1]})"
                        )
            samples.append(Sample("test", label, image.stem, image, mask))
    if not any(s.split == "test" for s in samples):
        raise LayoutError(f"{test_dir}: holds no images")
    lights_dir = root / "lights"
    lights = tuple(sorted(p.name for p in lights_dir.iterdir() if p.is_dir())) if lights_dir.is_dir() else ()
    return CategoryIndex(root=root, samples=tuple(samples), lights=lights)
