"""TAO Visual ChangeNet-Classification's Optical Inspection layout, read as it is.

::

    <root>/train.csv, val.csv[, test.csv]   or one CSV of any name (then a seeded split)
    <root>/images/<input_path>/<object_name>_<Light>.<ext>    the part, one file per light
    <root>/images/<golden_path>/<object_name>_<Light>.<ext>   its golden (or <golden_path>/0/, /1/... for several)

CSV columns: ``input_path, golden_path, label, object_name``; ``label`` is ``PASS`` or the
defect (any other value, lower-cased into a class name). The lights are whatever files
the rows have, among TAO's LowAngleLight, SolderLight, UniformLight and WhiteLight; every
row must have the same ones, and ``data.lighting_conditions`` must be among them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from components.config import LIGHTING_CONDITIONS, Params
from components.data.formats import CLASSIFY_COLUMNS, PASS_LABEL
from components.data.sources.common import check_unique, class_name, find_image, safe_name, split_files
from components.data.sources.options import SourceOptions
from components.data.sources.records import GOOD, LightFiles, Record, SourceError, SourceIndex

MAX_GOLDENS = 16


def csv_files(root: Path) -> dict[str | None, Path]:
    """``{split: csv}`` from ``train.csv``/``val.csv``/``test.csv``, or ``{None: the only csv}``."""
    return split_files(root, ".csv", "CSV")


def _lights_of(folder: Path, object_name: str) -> LightFiles:
    found = ((light, find_image(folder, f"{object_name}_{light}")) for light in LIGHTING_CONDITIONS)
    return tuple((light, path) for light, path in found if path is not None)


def _goldens_of(images: Path, golden_path: str, object_name: str) -> tuple[LightFiles, ...]:
    """One golden at ``golden_path``, or several in its numbered sub-folders ``0``, ``1``, ..."""
    single = _lights_of(images / golden_path, object_name)
    if single:
        return (single,)
    goldens = []
    for k in range(MAX_GOLDENS):
        found = _lights_of(images / golden_path / str(k), object_name)
        if not found:
            break
        goldens.append(found)
    return tuple(goldens)


def _class_of(label: str, where: str, options: SourceOptions) -> str:
    if label == PASS_LABEL:
        return GOOD
    name = class_name(label)
    if options.classes and name not in options.classes:
        raise SourceError(f"{where}: label {label!r} is not a known class {list(options.classes)} (or {PASS_LABEL})")
    return name


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: Excel's CSV export starts with a BOM
            reader = csv.DictReader(handle)
            header = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in CLASSIFY_COLUMNS if c not in header]
            if missing:
                raise SourceError(f"{path}:1: header {header} lacks column(s) {missing}")
            return [
                (reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SourceError(f"{path}: cannot read CSV ({error})") from None


def read_tao_classify(root: Path, options: SourceOptions, params: Params | None = None) -> SourceIndex:
    """Records of every CSV row; raise :class:`SourceError` naming the CSV file and line."""
    images = root / options.images_dir
    if not images.is_dir():
        raise SourceError(f"{images}: missing; the CSV paths are relative to this folder (--images-dir)")
    records: list[Record] = []
    tables = csv_files(root)
    for split, path in tables.items():
        for line, row in _rows(path):
            where = f"{path}:{line}"
            empty = [c for c in CLASSIFY_COLUMNS if not row.get(c)]
            if empty:
                raise SourceError(f"{where}: empty {', '.join(empty)}")
            name = safe_name(row["object_name"])
            lights = _lights_of(images / row["input_path"], row["object_name"])
            if not lights:
                raise SourceError(
                    f"{where}: no image {images / row['input_path'] / row['object_name']}_<Light>.<ext> "
                    f"for any light of {list(LIGHTING_CONDITIONS)}"
                )
            goldens = _goldens_of(images, row["golden_path"], row["object_name"])
            if not goldens:
                raise SourceError(
                    f"{where}: no golden {images / row['golden_path'] / row['object_name']}_<Light>.<ext>"
                )
            records.append(
                Record(
                    name=name,
                    image=lights[0][1],
                    golden=goldens[0][0][1],
                    label=_class_of(row["label"], where, options),
                    split=split,
                    lights=lights,
                    golden_lights=goldens,
                    where=where,
                )
            )
    if not records:
        raise SourceError(f"{root}: the CSV holds no rows")
    check_unique(records)
    lights = _check_same_lights(records)
    if params is not None:
        check_configured_lights(records, params.data.lighting_conditions, lights)
    classes = tuple(sorted({r.label for r in records if r.label and r.label != GOOD}))
    return SourceIndex(
        root=root,
        format="tao-classify",
        records=tuple(records),
        classes=classes,
        lights=lights,
        meta_files=tuple(tables.values()),
    )


def _check_same_lights(records: list[Record]) -> tuple[str, ...]:
    """Every row (and each of its goldens) must have the same lights: a row lacking one is named."""
    union = sorted({light for r in records for light, _ in r.lights}, key=LIGHTING_CONDITIONS.index)
    for record in records:
        for files, what in [(record.lights, "image"), *((g, "golden image") for g in record.golden_lights)]:
            have = {light for light, _ in files}
            lacking = [light for light in union if light not in have]
            if lacking:
                raise SourceError(
                    f"{record.where}: no {what} for lighting condition(s) {lacking} "
                    f"(other rows have {union}; expected <object_name>_<Light>.<ext>)"
                )
    return tuple(union)


def check_configured_lights(records: list[Record], configured: tuple[str, ...], found: tuple[str, ...]) -> None:
    """``data.lighting_conditions`` must be a subset of the lights the CSV rows have."""
    lacking = [light for light in configured if light not in found]
    if lacking:
        raise SourceError(
            f"{records[0].where}: data.lighting_conditions {list(configured)} asks for {lacking}, "
            f"but the source has only {list(found)}; set data.lighting_conditions to a subset of these"
        )
