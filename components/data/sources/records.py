"""The one in-memory shape every data source becomes before prepare writes the datasets.

Each source format (MVTec AD, TAO's two layouts, COCO, golden/test pairs) has a reader
that turns its files into :class:`Record` objects; :mod:`components.data.prepare` writes
the segmentation, classification and COCO datasets from records alone, so a new format is
a new reader, never a new branch in prepare.

Records hold *paths*, not pixels: a 10,000-pair source is a few megabytes of records, and
the images are decoded one at a time by the (parallel) writers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOOD = "good"
DEFECT = "defect"
"""Class of a defect whose kind the source does not name (TAO segmentation masks, boxes without a class)."""

LightFiles = tuple[tuple[str, Path], ...]
"""``((light, file), ...)``: one part photographed under each lighting condition."""


class SourceError(ValueError):
    """A source that cannot be read as its format; the message names the file (and line or row)."""


@dataclass(frozen=True)
class Box:
    """A defect box in the pixel coordinates of its source image (``x2``/``y2`` exclusive)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def inside(self, width: int, height: int) -> bool:
        """True when the box lies within a ``width x height`` image."""
        return self.x1 >= 0 and self.y1 >= 0 and self.x2 <= width and self.y2 <= height

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy, self.label)


@dataclass(frozen=True)
class Instance:
    """One annotated defect: its box and, when the source has one, its outline.

    ``segmentation`` is COCO's (polygons or RLE, source pixel coordinates); ``None`` means
    the instance's pixels are the record's mask inside the box, or unknown when it has none.
    """

    box: Box
    segmentation: Any = None
    where: str = ""
    """``file:line`` (or ``file: annotation N``) that defines it, for error messages."""


@dataclass(frozen=True)
class Record:
    """One part to inspect: a test image, what it is compared with, and what is known about it.

    Attributes:
        name: unique, file-safe; names every prepared file of the record.
        image: the test image (segmentation A, COCO image, and the classification input
            when a single lighting condition is configured and ``lights`` is empty).
        label: ``good``, a defect kind, or ``None`` when only the mask can tell (decided
            while preparing: any foreground pixel makes it :data:`DEFECT`).
        golden: the reference image (segmentation B); ``None`` for single-image sources.
        mask: binary change mask (0/255 or 0/1) of ``image``; ``None``: none drawn.
        masked: whether ``mask`` is the ground truth. A good part is masked (all clear)
            even without a file; a defect with boxes but no mask is not, and is left out
            of the segmentation dataset rather than taught as "no change".
        instances: boxes (and outlines) for the COCO dataset.
        split: ``train``/``val``/``test`` when the source says so, else ``None`` (seeded split).
        lights, golden_lights: the test image and each golden per lighting condition.
        where: the file (and line) that defines the record.
    """

    name: str
    image: Path
    label: str | None
    golden: Path | None = None
    mask: Path | None = None
    masked: bool = True
    instances: tuple[Instance, ...] = ()
    split: str | None = None
    lights: LightFiles = ()
    golden_lights: tuple[LightFiles, ...] = ()
    where: str = ""
    sidecars: tuple[Path, ...] = ()
    """Other files of the record that import must copy (a pair's box file)."""

    def files(self) -> list[Path]:
        """Every file the record reads, once each, in a fixed order."""
        found = [self.image, self.golden, self.mask, *self.sidecars]
        found += [path for _, path in self.lights]
        found += [path for golden in self.golden_lights for _, path in golden]
        return list(dict.fromkeys(p for p in found if p is not None))

    @property
    def stratum(self) -> str:
        """The class a seeded split stratifies on (the label, or "defect" when undecided)."""
        return self.label if self.label is not None else DEFECT

    def light_image(self, light: str, single_light: bool) -> Path | None:
        """The test image under ``light``; the main image stands for the only configured light."""
        found = dict(self.lights).get(light)
        if found is None and single_light and not self.lights:
            return self.image
        return found

    def golden_light_images(self, light: str, single_light: bool) -> list[Path] | None:
        """Every golden under ``light`` (``None`` when one is missing)."""
        if not self.golden_lights:
            if single_light and self.golden is not None:
                return [self.golden]
            return None
        paths = [dict(golden).get(light) for golden in self.golden_lights]
        return None if any(p is None for p in paths) else [p for p in paths if p is not None]


@dataclass(frozen=True)
class SourceIndex:
    """Everything a reader found: the records, their defect classes and the lights on offer."""

    root: Path
    format: str
    records: tuple[Record, ...]
    classes: tuple[str, ...]
    """Defect kinds (never ``good``), sorted: the COCO categories and the CSV labels."""
    lights: tuple[str, ...] = ()
    """Lighting conditions every record has (empty: one unnamed light, the main image)."""
    all_classes: tuple[str, ...] = ()
    """Every class the summary counts per split (``good`` included); empty: from the records."""
    manifest: dict[str, Any] | None = None
    """The reader's own ``split.json`` payload (MVTec's golden pool); ``None``: the generic one."""
    golden_pool: int = 0
    """Golden images set aside as references (MVTec's recipe); 0 when the source pairs its parts."""
    meta_files: tuple[Path, ...] = ()
    """The source's own index files (lists, CSVs, COCO JSONs) that import copies with the images."""
