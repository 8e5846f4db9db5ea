"""Source formats: every way data arrives, each read into :class:`~.records.Record` objects.

``data.source`` names a format; ``data/<source>/<category>`` holds its files (written by
``inspectops data synth``, ``data ingest`` or ``data import``). Each format says which
prepared datasets it can feed, and so which model families can train on it:

============  ===================================  ==========================
format        what it is                           datasets
============  ===================================  ==========================
synthetic     the built-in demo (MVTec layout)     segment, classify, coco
mvtec         MVTec AD category                    segment, classify, coco
tao-segment   TAO ChangeNet-Segmentation layout    segment, classify, coco
tao-classify  TAO Optical Inspection CSV + images  classify
coco          images + COCO instances              coco
pairs         golden/test pairs, boxes, masks      segment, classify, coco
folders       good/ and one folder per defect      classify, image_labels
============  ===================================  ==========================

``image_labels`` (single images with their image label: what the CAM classifier learns from) is
also fed by every format that feeds ``segment``: there CAM reads the segmentation set's test
images and masks, and prepare writes no lists (:attr:`SourceFormat.written`), so those formats'
prepared trees are as they always were. ``folders`` has no masks: prepare writes its lists,
``image_labels/<split>.csv``, pointing at the classify set's test images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.config import Params
from components.data.sources.coco import read_coco
from components.data.sources.folders import read_folders
from components.data.sources.mvtec import read_mvtec
from components.data.sources.options import SourceOptions, load_options
from components.data.sources.pairs import read_pairs
from components.data.sources.records import SourceError, SourceIndex
from components.data.sources.tao_classify import read_tao_classify
from components.data.sources.tao_segment import read_tao_segment

IMAGE_LABELS = "image_labels"
"""Single images with their image label (CAM's input); see the module docstring."""
DATASETS = ("segment", "classify", "coco", IMAGE_LABELS)
"""The prepared datasets (:class:`components.data.formats.DatasetLayout`)."""

Reader = Callable[[Path, SourceOptions, Params | None], SourceIndex]
"""``read(root, options, params)``: params is ``None`` at import time (no configured lights, no split yet)."""


@dataclass(frozen=True)
class SourceFormat:
    """One way data arrives: its reader and the prepared datasets it can feed."""

    name: str
    read: Reader
    datasets: tuple[str, ...]
    description: str
    importable: bool = True
    """Whether ``inspectops data import`` takes it (MVTec has ``data ingest``, synthetic ``data synth``)."""

    def __post_init__(self) -> None:
        if IMAGE_LABELS in self.written and "classify" not in self.datasets:
            raise ValueError(f"{self.name}: the {IMAGE_LABELS} lists point at classify images; feed classify too")

    @property
    def written(self) -> tuple[str, ...]:
        """The datasets prepare writes: ``image_labels`` is read from ``segment`` when the format feeds it."""
        if "segment" in self.datasets:
            return tuple(d for d in self.datasets if d != IMAGE_LABELS)
        return self.datasets


SOURCE_FORMATS: dict[str, SourceFormat] = {
    f.name: f
    for f in (
        SourceFormat("synthetic", read_mvtec, DATASETS, "the built-in demo category", importable=False),
        SourceFormat("mvtec", read_mvtec, DATASETS, "an MVTec AD category", importable=False),
        SourceFormat("tao-segment", read_tao_segment, DATASETS, "TAO ChangeNet-Segmentation: A/ B/ label/ list/"),
        SourceFormat("tao-classify", read_tao_classify, ("classify",), "TAO Optical Inspection CSV + images/"),
        SourceFormat("coco", read_coco, ("coco",), "images/ + COCO instances JSON"),
        SourceFormat("pairs", read_pairs, DATASETS, "golden/test pairs with optional boxes and masks"),
        SourceFormat("folders", read_folders, ("classify", IMAGE_LABELS), "good/ and one folder per defect kind"),
    )
}
IMPORT_FORMATS = tuple(name for name, f in SOURCE_FORMATS.items() if f.importable)


def source_format(name: str) -> SourceFormat:
    try:
        return SOURCE_FORMATS[name]
    except KeyError:
        raise SourceError(f"unknown source format {name!r}; one of {sorted(SOURCE_FORMATS)}") from None


def feeds(params: Params, dataset: str) -> bool:
    """Whether ``params.data.source`` can feed the prepared ``dataset`` (and so its model families)."""
    return dataset in source_format(params.data.source).datasets


def read_source(params: Params) -> SourceIndex:
    """Read ``data/<source>/<category>`` with its format and the options import recorded there."""
    fmt = source_format(params.data.source)
    root = params.raw_category_dir
    recorded, options = load_options(root)
    if recorded is not None and recorded != fmt.name:
        raise SourceError(f"{root}: was imported as {recorded!r} but data.source is {fmt.name!r}")
    if not root.is_dir() and fmt.importable:
        raise SourceError(
            f"{root}: not found; run `inspectops data import --format {fmt.name} SOURCE --name {params.data.category}`"
        )
    return fmt.read(root, options, params)


__all__ = [
    "DATASETS",
    "IMAGE_LABELS",
    "IMPORT_FORMATS",
    "SOURCE_FORMATS",
    "SourceError",
    "SourceFormat",
    "SourceIndex",
    "SourceOptions",
    "feeds",
    "read_source",
    "source_format",
]
