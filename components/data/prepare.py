"""Prepare the three training datasets from one raw MVTec-layout category.

Reads ``params.raw_category_dir`` and writes ``params.datasets_dir`` (see
:mod:`components.data.formats`):

- ``segment/``: TAO Visual ChangeNet-Segmentation pairs (A test image, B golden, label mask);
- ``classify/``: TAO Optical Inspection CSVs and per-light images with their goldens;
- ``coco/``: COCO instances of the defect regions, for the mask auto-labeler;
- ``split.json``: which images formed the golden pool and where every sample went, so a
  split can be audited and serving can pick the same references.

The whole tree is built in a staging directory and swapped in at the end
(:func:`components.fsutil.atomic_dir`): a corrupt image or a bad layout raises and
leaves the previous datasets untouched. Work is serial on purpose: the category is a
few hundred small images (seconds), and a fixed order keeps the output byte-identical.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from components.config import Params
from components.data.coco import CocoBuilder
from components.data.formats import (
    CLASSIFY_COLUMNS,
    PASS_LABEL,
    DatasetLayout,
    classify_image_path,
    golden_image_paths,
)
from components.data.layout import CategoryIndex, LayoutError, Sample, scan_category
from components.data.split import SPLIT_NAMES, TEST, Assignment, SplitPlan, split_samples
from components.fsutil import atomic_dir, atomic_file
from components.imageio import read_image, write_png

INPUT_DIR = "input"
GOLDEN_DIR = "golden"
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


class LightingError(LayoutError):
    """A configured lighting condition that the category cannot provide."""


# ---------------------------------------------------------------- lighting


def light_source(index: CategoryIndex, sample: Sample, light: str, lights: Sequence[str]) -> Path:
    """The raw file showing ``sample`` under ``light``.

    A category with a ``lights/<light>`` tree provides it; a single-light configuration
    may use the main image (MVTec is shot under one light). Anything else would silently
    duplicate one image under several light names, so it is an error.
    """
    if light in index.lights:
        return index.light_image(sample, light)
    if len(lights) == 1:
        return sample.image
    raise LightingError(
        f"{index.root}: lighting condition {light!r} is configured (data.lighting_conditions="
        f"{list(lights)}) but category {index.root.name!r} has no lights/{light} folder "
        f"(it provides {list(index.lights) or 'only its main images'}); "
        "configure a single lighting condition for a one-light category"
    )


def check_lights(index: CategoryIndex, lights: Sequence[str]) -> None:
    """Fail before any work if some configured light cannot be provided."""
    probe = index.train_good[0]
    for light in lights:
        light_source(index, probe, light, lights)


# ---------------------------------------------------------------- images


def _resize_rgb(path: Path, size: int, resample: str) -> np.ndarray:
    """Read as RGB and resize to ``size x size`` (ChangeNet takes square 3-channel input)."""
    image = Image.fromarray(read_image(path, mode="RGB"))
    if image.size != (size, size):
        image = image.resize((size, size), _RESAMPLE[resample])
    return np.asarray(image)


def _resize_mask(path: Path | None, size: int) -> np.ndarray:
    """Boolean ``size x size`` mask; NEAREST so that labels stay binary. ``None``: all clear."""
    if path is None:
        return np.zeros((size, size), dtype=bool)
    image = Image.fromarray(read_image(path, mode="L"))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(image) > 127


@dataclass
class _ImageWriter:
    """Writes resized images; each source file is decoded, resized and encoded once, later
    targets get byte copies (goldens are shared by many samples, and a one-light classify
    input equals its A image). PNG encoding is most of prepare's time."""

    size: int
    resample: str
    written: dict[Path, Path] = field(default_factory=dict)

    def write(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        first = self.written.get(source)
        if first is None:
            write_png(target, _resize_rgb(source, self.size, self.resample))
            self.written[source] = target
        else:
            shutil.copyfile(first, target)


# ---------------------------------------------------------------- per-sample outputs


@dataclass
class _SplitOutputs:
    """What one split accumulates while samples are written."""

    coco: CocoBuilder
    names: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)


class _Preparer:
    """Writes every output of one sample into a staging layout."""

    def __init__(self, params: Params, index: CategoryIndex, layout: DatasetLayout) -> None:
        self.data = params.data
        self.index = index
        self.layout = layout
        self.images = _ImageWriter(params.data.image_size, params.data.resample)
        self.classify_files = 0

    def write(self, assignment: Assignment, outputs: _SplitOutputs) -> None:
        name = assignment.name
        self._write_segment(assignment)
        mask = _resize_mask(assignment.sample.mask, self.data.image_size)
        write_png(self.layout.segment_image("label", name), mask.astype(np.uint8) * 255)
        self._write_classify(assignment)
        outputs.names.append(name)
        outputs.rows.append(self._csv_row(assignment))
        outputs.coco.add(
            file_name=self._relative(self.layout.segment_image("A", name)),
            golden_file_name=self._relative(self.layout.segment_image("B", name)),
            label=assignment.sample.label,
            mask=mask,
        )

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.layout.root).as_posix()

    def _write_segment(self, assignment: Assignment) -> None:
        self.images.write(assignment.sample.image, self.layout.segment_image("A", assignment.name))
        self.images.write(assignment.golden.image, self.layout.segment_image("B", assignment.name))

    def _write_classify(self, assignment: Assignment) -> None:
        lights = self.data.lighting_conditions
        images_dir, name = self.layout.classify_images, assignment.name
        for light in lights:
            source = light_source(self.index, assignment.sample, light, lights)
            self.images.write(source, classify_image_path(images_dir, f"{INPUT_DIR}/{name}", name, light))
            self.classify_files += 1
            targets = golden_image_paths(images_dir, f"{GOLDEN_DIR}/{name}", name, light, self.data.num_golden)
            for golden, target in zip(assignment.goldens, targets, strict=True):
                self.images.write(light_source(self.index, golden, light, lights), target)
                self.classify_files += 1

    @staticmethod
    def _csv_row(assignment: Assignment) -> dict[str, str]:
        sample = assignment.sample
        return {
            "input_path": f"{INPUT_DIR}/{sample.name}",
            "golden_path": f"{GOLDEN_DIR}/{sample.name}",
            "label": PASS_LABEL if sample.is_good else sample.label,
            "object_name": sample.name,
        }


# ---------------------------------------------------------------- split-level files


def _write_list(path: Path, names: list[str]) -> None:
    with atomic_file(path) as handle:
        handle.writelines(f"{name}.png\n" for name in sorted(names))


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with atomic_file(path, mode="w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CLASSIFY_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: row["object_name"]))


def _write_json(path: Path, payload: Any) -> None:
    with atomic_file(path) as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        handle.write("\n")


def _split_manifest(plan: SplitPlan, root: Path) -> dict[str, Any]:
    """Golden pool and per-sample split/goldens; paths relative to the raw category root."""

    def rel(sample: Sample) -> str:
        return sample.image.relative_to(root).as_posix() if sample.image.is_relative_to(root) else str(sample.image)

    return {
        "golden_pool": [{"name": s.name, "image": rel(s)} for s in plan.golden_pool],
        "samples": [
            {
                "name": a.name,
                "split": a.split,
                "label": a.sample.label,
                "image": rel(a.sample),
                "goldens": [g.name for g in a.goldens],
            }
            for a in plan.assignments
        ],
    }


# ---------------------------------------------------------------- orchestration


def output_splits(test_fraction: float) -> tuple[str, ...]:
    """Splits that get files: a test split only when one is configured."""
    return tuple(s for s in SPLIT_NAMES if s != TEST or test_fraction > 0)


def plan_split(params: Params, index: CategoryIndex) -> SplitPlan:
    """The seeded split of ``index`` under ``params`` (no I/O)."""
    data = params.data
    return split_samples(
        index.samples,
        seed=params.seed,
        golden_fraction=data.golden_fraction,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        num_golden=data.num_golden,
    )


@contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback; rich is imported only when a bar is wanted."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def summarize(
    plan: SplitPlan, outputs: dict[str, _SplitOutputs], classes: list[str], classify_files: int
) -> dict[str, int]:
    """Flat ``{metric: count}``; every key is present for every run so metric diffs line up."""
    summary: dict[str, int] = {"segment/golden_pool": len(plan.golden_pool), "classify/images": classify_files}
    skipped = 0
    for split in SPLIT_NAMES:
        members = plan.in_split(split)
        counts = plan.class_counts(split)
        summary[f"segment/{split}"] = len(members)
        summary[f"segment/{split}_defect"] = sum(not a.sample.is_good for a in members)
        for label in classes:
            summary[f"segment/{split}/{label}"] = counts.get(label, 0)
        written = outputs.get(split)
        # A split without files (test when test_fraction is 0) counts 0.
        summary[f"classify/{split}_rows"] = len(written.rows) if written else 0
        summary[f"coco/{split}_images"] = len(written.coco.images) if written else 0
        summary[f"coco/{split}_annotations"] = len(written.coco.annotations) if written else 0
        skipped += written.coco.skipped_regions if written else 0
    summary["coco/skipped_regions"] = skipped
    return dict(sorted(summary.items()))


def _write_split_files(layout: DatasetLayout, split: str, outputs: _SplitOutputs, category: str) -> None:
    _write_list(layout.segment_list(split), outputs.names)
    _write_csv(layout.classify_csv(split), outputs.rows)
    _write_json(layout.coco_json(split), outputs.coco.to_dict(f"inspectops {category} {split}"))


def prepare_datasets(params: Params, progress: bool = False) -> dict[str, int]:
    """Build segment/classify/coco datasets from the raw category; return summary counts.

    Raises :class:`LayoutError` (bad category folder, or :class:`LightingError`),
    :class:`components.imageio.ImageReadError` (a corrupt image, named) or
    :class:`components.data.split.SplitError` (e.g. too few goldens); on any error the
    previous ``params.datasets_dir`` is left as it was.
    """
    index = scan_category(params.raw_category_dir)
    check_lights(index, params.data.lighting_conditions)
    plan = plan_split(params, index)
    splits = output_splits(params.data.test_fraction)
    defect_kinds = tuple(index.defect_kinds)
    outputs = {split: _SplitOutputs(coco=CocoBuilder(defect_kinds)) for split in splits}
    todo = [a for a in plan.assignments if a.split in outputs]
    with atomic_dir(params.datasets_dir) as staging:
        layout = DatasetLayout(staging)
        preparer = _Preparer(params, index, layout)
        with _progress_bar(progress, len(todo), f"prepare {params.data.category}") as advance:
            for assignment in todo:
                preparer.write(assignment, outputs[assignment.split])
                advance()
        for split, written in outputs.items():
            _write_split_files(layout, split, written, params.data.category)
        _write_json(staging / "split.json", _split_manifest(plan, index.root))
    classes = sorted({s.label for s in index.samples})
    return summarize(plan, outputs, classes, preparer.classify_files)
