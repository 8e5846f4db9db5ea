"""Prepare the training datasets from any source format, streamed and in parallel.

Reads ``data/<source>/<category>`` through its format's reader
(:mod:`components.data.sources`) and writes ``params.datasets_dir`` (see
:mod:`components.data.formats`), as far as the source can feed them:

- ``segment/``: TAO Visual ChangeNet-Segmentation pairs (A test image, B golden, label mask);
- ``classify/``: TAO Optical Inspection CSVs and per-light images with their goldens;
- ``coco/``: COCO instances of the defects, for the mask auto-labeler;
- ``image_labels/``: each split's images and image labels, for the CAM classifier on a source
  without masks (class folders); with masks CAM reads ``segment/``;
- ``split.json``: where every record went (and MVTec's golden pool), so a split can be audited;
- ``manifest.json``: the source format and which datasets were written (validate reads it).

Why it is built this way:

- Records hold paths; each is decoded, resized and encoded by one worker
  (:func:`write_record`), so memory stays flat whatever the dataset size, and a process
  pool uses every core (``data.workers``). Results are merged in name order, so the output
  is byte-identical whatever the number of workers.
- A source image used by several records (MVTec's golden pool, a one-light classify input
  equal to its A image) is encoded once by the first record that needs it; the others get
  byte copies once the pool is done.
- The whole tree is built in a staging directory and swapped in at the end
  (:func:`components.fsutil.atomic_dir`): a corrupt image or a bad layout raises naming the
  file, and the previous datasets stay as they were.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from components.config import Params
from components.data.coco import MIN_REGION_AREA, bbox_xywh, categories, category_ids, connected_regions, encode_rle
from components.data.formats import (
    CLASSIFY_COLUMNS,
    IMAGE_LABEL_COLUMNS,
    PASS_LABEL,
    DatasetLayout,
    classify_image_path,
    golden_image_paths,
)
from components.data.sources import IMAGE_LABELS, read_source, source_format
from components.data.sources.common import assign_splits
from components.data.sources.mvtec import LightingError
from components.data.sources.records import DEFECT, GOOD, Instance, Record, SourceError, SourceIndex
from components.data.split import SPLIT_NAMES, TEST
from components.fsutil import atomic_dir, atomic_file
from components.imageio import read_image, write_png

INPUT_DIR = "input"
GOLDEN_DIR = "golden"
COCO_IMAGES_DIR = "images"
MANIFEST = "manifest.json"
PARALLEL_MIN_RECORDS = 48
"""Below this many records a process pool costs more than it saves."""
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}

__all__ = ["MANIFEST", "LightingError", "output_splits", "prepare_datasets", "prepared_datasets"]


# ---------------------------------------------------------------- pixels


def _resize_rgb(path: Path, size: int, resample: str) -> np.ndarray:
    """Read as RGB and resize to ``size x size`` (ChangeNet takes square 3-channel input)."""
    image = Image.fromarray(read_image(path, mode="RGB"))
    if image.size != (size, size):
        image = image.resize((size, size), _RESAMPLE[resample])
    return np.asarray(image)


def _native_rgb(path: Path, size_hw: tuple[int, int] | None, resample: str) -> np.ndarray:
    """Read as RGB at its own size (``data.tiling``), resized to ``size_hw`` only when that differs
    (a golden brought to its test image's size)."""
    pixels = read_image(path, mode="RGB")
    if size_hw is None or pixels.shape[:2] == tuple(size_hw):
        return pixels
    height, width = size_hw
    return np.asarray(Image.fromarray(pixels).resize((width, height), _RESAMPLE[resample]))


def _read_mask(path: Path) -> np.ndarray:
    """Boolean mask at source size: 0/255 masks threshold at 127, 0/1 masks (TAO allows them) at 0."""
    pixels = read_image(path, mode="L")
    return pixels > (0 if pixels.max() <= 1 else 127)


def _resize_bool(mask: np.ndarray, size: int) -> np.ndarray:
    """NEAREST so that labels stay binary."""
    if mask.shape == (size, size):
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(image) > 127


def _fit_bool(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """NEAREST to ``(height, width)`` (a native-size label that must match its test image)."""
    if mask.shape == tuple(size_hw):
        return mask
    height, width = size_hw
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(image) > 127


def _decode_segmentation(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """A COCO polygon list or RLE (source pixels) as a boolean mask."""
    from pycocotools import mask as mask_utils

    try:
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation, counts=segmentation["counts"].encode("ascii"))
        return mask_utils.decode(rle).astype(bool)
    except Exception as error:  # pycocotools raises bare Exceptions and TypeErrors on bad input
        raise SourceError(f"{where}: cannot decode its segmentation ({error})") from None


# ---------------------------------------------------------------- one record, in a worker


@dataclass(frozen=True)
class WriteContext:
    """What every worker needs besides its record; small and picklable."""

    root: Path
    size: int
    resample: str
    datasets: tuple[str, ...]
    lights: tuple[str, ...]
    num_golden: int
    classes: tuple[str, ...]
    native_segment: bool = False
    """``data.tiling``: ``segment/`` keeps each pair at its test image's own size; the rest is resized."""


@dataclass(frozen=True)
class RecordJob:
    """One record and the image writes it owns: ``(source, target)`` pairs it must encode."""

    record: Record
    encode: tuple[tuple[Path, Path], ...]


@dataclass(frozen=True)
class RecordResult:
    """What the merge step needs from a written record (no pixels)."""

    name: str
    split: str
    label: str
    in_segment: bool
    row: dict[str, str] | None
    coco_image: dict[str, Any] | None
    annotations: tuple[dict[str, Any], ...]
    skipped_regions: int
    classify_files: int
    image_label: dict[str, str] | None = None
    """The ``image_labels`` row: the classify input image (first light) and the label."""
    boxes_only: bool = False
    """A pair with boxes but no painted mask: listed in ``segment/list_boxes_only/`` (no label written)."""


def _segment_targets(layout: DatasetLayout, record: Record) -> list[tuple[Path, Path]]:
    if record.golden is None:
        return []
    return [
        (record.image, layout.segment_image("A", record.name)),
        (record.golden, layout.segment_image("B", record.name)),
    ]


def _classify_targets(layout: DatasetLayout, record: Record, ctx: WriteContext) -> list[tuple[Path, Path]]:
    single = len(ctx.lights) == 1
    images, name, writes = layout.classify_images, record.name, []
    for light in ctx.lights:
        source = record.light_image(light, single)
        goldens = record.golden_light_images(light, single)
        if source is None or goldens is None or len(goldens) < ctx.num_golden:
            have = [lt for lt, _ in record.lights] or ["its main image only"]
            hint = "; set data.lighting_conditions to one light, e.g. [UniformLight]" if not record.lights else ""
            raise LightingError(
                f"{record.where}: no {'image' if source is None else 'golden'} under lighting condition {light!r} "
                f"(data.lighting_conditions={list(ctx.lights)}, data.num_golden={ctx.num_golden}; it has {have}){hint}"
            )
        writes.append((source, classify_image_path(images, f"{INPUT_DIR}/{name}", name, light)))
        targets = golden_image_paths(images, f"{GOLDEN_DIR}/{name}", name, light, ctx.num_golden)
        writes += list(zip(goldens[: ctx.num_golden], targets, strict=True))
    return writes


def _coco_image_path(layout: DatasetLayout, record: Record, native_segment: bool = False) -> Path:
    """The segmentation A image, or a resized copy under ``coco/images`` (no golden, or A kept native)."""
    return (
        layout.segment_image("A", record.name)
        if record.golden is not None and not native_segment
        else layout.coco / COCO_IMAGES_DIR / f"{record.name}.png"
    )


def _is_native(layout: DatasetLayout, target: Path, ctx: WriteContext) -> bool:
    """A target written at native size: segmentation A/B images under ``data.tiling``."""
    return ctx.native_segment and target.parent in (layout.segment / "A", layout.segment / "B")


def record_writes(record: Record, ctx: WriteContext) -> list[tuple[Path, Path]]:
    """Every ``(source, target)`` image the record needs, in a fixed order."""
    layout = DatasetLayout(ctx.root)
    writes = []
    if "segment" in ctx.datasets or "coco" in ctx.datasets:
        writes += _segment_targets(layout, record)
    if "coco" in ctx.datasets and (record.golden is None or ctx.native_segment):
        writes.append((record.image, _coco_image_path(layout, record, ctx.native_segment)))
    if "classify" in ctx.datasets:
        writes += _classify_targets(layout, record, ctx)
    return writes


def _instance_annotation(
    instance: Instance,
    mask: np.ndarray | None,
    scale: tuple[float, float],
    source_hw: tuple[int, int],
    ctx: WriteContext,
) -> dict[str, Any]:
    sx, sy = scale
    box = instance.box.scaled(sx, sy)
    x1, y1 = max(0.0, box.x1), max(0.0, box.y1)
    x2, y2 = min(float(ctx.size), box.x2), min(float(ctx.size), box.y2)
    annotation: dict[str, Any] = {
        "category_id": category_ids(ctx.classes)[box.label],
        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        "area": round((x2 - x1) * (y2 - y1), 2),
        "iscrowd": 0,
    }
    region = None
    if instance.segmentation is not None:
        region = _resize_bool(_decode_segmentation(instance.segmentation, *source_hw, instance.where), ctx.size)
    elif mask is not None:
        inside = np.zeros_like(mask)
        inside[int(np.floor(y1)) : int(np.ceil(y2)), int(np.floor(x1)) : int(np.ceil(x2))] = True
        region = mask & inside
    if region is not None and region.any():
        annotation["segmentation"] = encode_rle(region)
        annotation["area"] = int(region.sum())
    return annotation


def write_record(ctx: WriteContext, job: RecordJob) -> RecordResult:
    """Write the files ``job`` owns and compute the record's labels, row and COCO entries."""
    record, layout = job.record, DatasetLayout(ctx.root)
    native_hw = None
    if ctx.native_segment:
        from components.imageio import image_size

        width, height = image_size(record.image)
        native_hw = (height, width)
    for source, target in job.encode:
        target.parent.mkdir(parents=True, exist_ok=True)
        if _is_native(layout, target, ctx):
            write_png(target, _native_rgb(source, native_hw, ctx.resample))
        else:
            write_png(target, _resize_rgb(source, ctx.size, ctx.resample))
    source_mask = _read_mask(record.mask) if record.mask is not None else None
    label = record.label or (DEFECT if source_mask is not None and source_mask.any() else GOOD)
    mask = _resize_bool(source_mask, ctx.size) if source_mask is not None else None
    in_segment = "segment" in ctx.datasets and record.golden is not None and record.masked
    if in_segment and native_hw is not None:
        native = _fit_bool(source_mask, native_hw) if source_mask is not None else np.zeros(native_hw, dtype=bool)
        write_png(layout.segment_image("label", record.name), native.astype(np.uint8) * 255)
    elif in_segment:
        resized = mask if mask is not None else np.zeros((ctx.size, ctx.size), dtype=bool)
        write_png(layout.segment_image("label", record.name), resized.astype(np.uint8) * 255)
    coco_image, annotations, skipped = None, [], 0
    if "coco" in ctx.datasets:
        coco_image, annotations, skipped = _coco_entries(record, label, mask, layout, ctx)
    row = None
    if "classify" in ctx.datasets:
        row = {
            "input_path": f"{INPUT_DIR}/{record.name}",
            "golden_path": f"{GOLDEN_DIR}/{record.name}",
            "label": PASS_LABEL if label == GOOD else label,
            "object_name": record.name,
        }
    return RecordResult(
        name=record.name,
        split=record.split or "train",
        label=label,
        in_segment=in_segment,
        row=row,
        coco_image=coco_image,
        annotations=tuple(annotations),
        skipped_regions=skipped,
        classify_files=len(ctx.lights) * (1 + ctx.num_golden) if row else 0,
        image_label=_image_label_row(layout, record, label, ctx) if IMAGE_LABELS in ctx.datasets else None,
        boxes_only=_boxes_only(record, ctx),
    )


def _boxes_only(record: Record, ctx: WriteContext) -> bool:
    """A pair with boxes but no painted mask: kept out of the segment lists, listed as boxes-only."""
    return "segment" in ctx.datasets and record.golden is not None and bool(record.instances) and not record.masked


def _image_label_row(layout: DatasetLayout, record: Record, label: str, ctx: WriteContext) -> dict[str, str]:
    """The record's test image as the classify set holds it (under the first light) and its label."""
    image = classify_image_path(layout.classify_images, f"{INPUT_DIR}/{record.name}", record.name, ctx.lights[0])
    return {"name": record.name, "image": image.relative_to(layout.root).as_posix(), "label": label}


def _coco_entries(
    record: Record, label: str, mask: np.ndarray | None, layout: DatasetLayout, ctx: WriteContext
) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    image: dict[str, Any] = {
        "file_name": _coco_image_path(layout, record, ctx.native_segment).relative_to(layout.root).as_posix(),
        "width": ctx.size,
        "height": ctx.size,
    }
    if record.golden is not None and not ctx.native_segment:  # a native-size B would not match the image
        image["golden_file_name"] = layout.segment_image("B", record.name).relative_to(layout.root).as_posix()
    if record.instances:
        with Image.open(record.image) as source:
            width, height = source.size
        scale = (ctx.size / width, ctx.size / height)
        annotations = [_instance_annotation(i, mask, scale, (height, width), ctx) for i in record.instances]
        return image, annotations, 0
    if label == GOOD or mask is None:
        return image, [], 0
    regions, skipped = connected_regions(mask, MIN_REGION_AREA)
    category = category_ids(ctx.classes)[label]
    annotations = [
        {
            "category_id": category,
            "bbox": bbox_xywh(region),
            "area": int(region.sum()),
            "iscrowd": 0,
            "segmentation": encode_rle(region),
        }
        for region in regions
    ]
    return image, annotations, skipped


# ---------------------------------------------------------------- planning and running


def plan_jobs(records: Sequence[Record], ctx: WriteContext) -> tuple[list[RecordJob], list[tuple[Path, Path]]]:
    """Give each source image to the first record that needs it; the later targets are copies."""
    first: dict[Path, Path] = {}
    jobs, copies = [], []
    layout = DatasetLayout(ctx.root)
    for record in records:
        encode = []
        for source, target in record_writes(record, ctx):
            if _is_native(layout, target, ctx):  # its own size, never shared with a resized copy
                encode.append((source, target))
            elif source in first:
                copies.append((first[source], target))
            else:
                first[source] = target
                encode.append((source, target))
        jobs.append(RecordJob(record, tuple(encode)))
    return jobs, copies


def worker_count(configured: int | None, records: int) -> int:
    """``data.workers`` (``None``: one per core, at most 8); 1 below :data:`PARALLEL_MIN_RECORDS`."""
    workers = configured if configured is not None else min(os.cpu_count() or 1, 8)
    return 1 if records < PARALLEL_MIN_RECORDS else max(1, workers)


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver where there is one: forking a process that holds threads (Prefect, torch) can hang."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_jobs(
    jobs: list[RecordJob], ctx: WriteContext, workers: int, advance: Callable[[], None]
) -> Iterator[RecordResult]:
    """Results in job order; a worker's error (naming its file) is raised here."""
    import functools

    work = functools.partial(write_record, ctx)
    if workers <= 1:
        for job in jobs:
            yield work(job)
            advance()
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        for result in pool.map(work, jobs, chunksize=max(1, min(32, len(jobs) // (workers * 8)))):
            yield result
            advance()


@contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback; rich is imported only when a bar is wanted."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


# ---------------------------------------------------------------- split-level files


@dataclass
class _SplitOutputs:
    names: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    skipped_regions: int = 0
    image_labels: list[dict[str, str]] = field(default_factory=list)
    boxes_only: list[str] = field(default_factory=list)

    def add(self, result: RecordResult) -> None:
        if result.in_segment:
            self.names.append(result.name)
        if result.boxes_only:
            self.boxes_only.append(result.name)
        if result.image_label is not None:
            self.image_labels.append(result.image_label)
        if result.row is not None:
            self.rows.append(result.row)
        if result.coco_image is not None:
            image_id = len(self.images) + 1
            self.images.append({"id": image_id, **result.coco_image})
            for annotation in result.annotations:
                self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, **annotation})
        self.skipped_regions += result.skipped_regions


def _write_list(path: Path, names: list[str]) -> None:
    with atomic_file(path) as handle:
        handle.writelines(f"{name}.png\n" for name in sorted(names))


def _write_csv(
    path: Path, rows: list[dict[str, str]], columns: Sequence[str] = CLASSIFY_COLUMNS, key: str = "object_name"
) -> None:
    with atomic_file(path, mode="w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: row[key]))


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        handle.write("\n")


def _write_split_files(layout: DatasetLayout, split: str, out: _SplitOutputs, ctx: WriteContext, category: str) -> None:
    if "segment" in ctx.datasets:
        _write_list(layout.segment_list(split), out.names)
        if out.boxes_only:  # only when there are some: other sources' datasets stay byte-identical
            _write_list(layout.segment_boxes_only_list(split), out.boxes_only)
    if "classify" in ctx.datasets:
        _write_csv(layout.classify_csv(split), out.rows)
    if IMAGE_LABELS in ctx.datasets:
        _write_csv(layout.image_labels_csv(split), out.image_labels, IMAGE_LABEL_COLUMNS, key="name")
    if "coco" in ctx.datasets:
        _write_json(
            layout.coco_json(split),
            {
                "info": {"description": f"inspectops {category} {split}", "version": "1.0"},
                "licenses": [],
                "categories": categories(list(ctx.classes)),
                "images": out.images,
                "annotations": out.annotations,
            },
        )


def _generic_manifest(records: Sequence[Record], root: Path) -> dict[str, Any]:
    def rel(path: Path | None) -> str | None:
        if path is None:
            return None
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    return {
        "golden_pool": [],
        "samples": [
            {
                "name": r.name,
                "split": r.split,
                "label": r.label,
                "image": rel(r.image),
                "goldens": [rel(r.golden)] if r.golden else [],
            }
            for r in records
        ],
    }


def output_splits(test_fraction: float, records: Sequence[Record] = ()) -> tuple[str, ...]:
    """Splits that get files: train and val always, test when configured or given by the source."""
    has_test = test_fraction > 0 or any(r.split == TEST for r in records)
    return tuple(s for s in SPLIT_NAMES if s != TEST or has_test)


def summarize(
    index: SourceIndex, results: list[RecordResult], outputs: dict[str, _SplitOutputs], classify_files: int
) -> dict[str, int]:
    """Flat ``{metric: count}``; every key is present for every run so metric diffs line up."""
    classes = list(index.all_classes) or sorted({r.label for r in results})
    summary: dict[str, int] = {"segment/golden_pool": index.golden_pool, "classify/images": classify_files}
    skipped = 0
    for split in SPLIT_NAMES:
        members = [r for r in results if r.split == split and r.in_segment]
        summary[f"segment/{split}"] = len(members)
        summary[f"segment/{split}_defect"] = sum(r.label != GOOD for r in members)
        for label in classes:
            summary[f"segment/{split}/{label}"] = sum(r.label == label for r in members)
        written = outputs.get(split)
        summary[f"classify/{split}_rows"] = len(written.rows) if written else 0
        summary[f"coco/{split}_images"] = len(written.images) if written else 0
        summary[f"coco/{split}_annotations"] = len(written.annotations) if written else 0
        skipped += written.skipped_regions if written else 0
    summary["coco/skipped_regions"] = skipped
    if index.format not in ("mvtec", "synthetic"):
        summary["data/records"] = len(results)
        summary["segment/unlabelled"] = sum(not r.in_segment for r in results) if "segment" in _datasets(index) else 0
        summary["segment/boxes_only"] = sum(r.boxes_only for r in results)
    if IMAGE_LABELS in source_format(index.format).written:
        for split in SPLIT_NAMES:
            summary[f"image_labels/{split}_rows"] = len(outputs[split].image_labels) if split in outputs else 0
    return dict(sorted(summary.items()))


def _datasets(index: SourceIndex) -> tuple[str, ...]:
    return source_format(index.format).datasets


def prepared_datasets(datasets_dir: Path) -> tuple[str, ...]:
    """The datasets a prepare run wrote (all three for a tree from before the manifest existed)."""
    path = datasets_dir / MANIFEST
    if not path.is_file():
        return ("segment", "classify", "coco")
    return tuple(json.loads(path.read_text())["datasets"])


# ---------------------------------------------------------------- orchestration


def prepare_datasets(params: Params, progress: bool = False) -> dict[str, int]:
    """Build every dataset the source can feed; return summary counts.

    Raises :class:`components.data.sources.SourceError` or
    :class:`components.data.layout.LayoutError` (a bad source, naming the file and line),
    :class:`components.imageio.ImageReadError` (a corrupt image, named) or
    :class:`components.data.split.SplitError`; on any error the previous
    ``params.datasets_dir`` is left as it was.
    """
    data = params.data
    index = read_source(params)
    records = assign_splits(index.records, params.seed, data.val_fraction, data.test_fraction)
    splits = output_splits(data.test_fraction, records)
    records = tuple(sorted((r for r in records if r.split in splits), key=lambda r: r.name))
    datasets = source_format(params.data.source).written
    with atomic_dir(params.datasets_dir) as staging:
        ctx = WriteContext(
            root=staging,
            size=data.image_size,
            resample=data.resample,
            datasets=datasets,
            lights=tuple(data.lighting_conditions),
            num_golden=data.num_golden,
            classes=index.classes,
            native_segment=data.tiling is not None,
        )
        jobs, copies = plan_jobs(records, ctx)
        workers = worker_count(data.workers, len(jobs))
        results: list[RecordResult] = []
        with _progress_bar(progress, len(jobs), f"prepare {data.category} ({workers} worker(s))") as advance:
            results.extend(run_jobs(jobs, ctx, workers, advance))
        for source, target in copies:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        outputs = {split: _SplitOutputs() for split in splits}
        for result in results:
            outputs[result.split].add(result)
        for split, out in outputs.items():
            _write_split_files(DatasetLayout(staging), split, out, ctx, data.category)
        _write_json(staging / "split.json", index.manifest or _generic_manifest(records, index.root))
        _write_json(
            staging / MANIFEST, {"format": index.format, "datasets": list(datasets), "classes": list(index.classes)}
        )
    return summarize(index, results, outputs, sum(r.classify_files for r in results))
