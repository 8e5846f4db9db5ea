"""Small helpers the source readers share: finding images by stem, safe names, seeded splits."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from components.data.layout import IMAGE_SUFFIXES
from components.data.sources.records import Record, SourceError
from components.data.split import SPLIT_NAMES, split_class

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def safe_name(text: str) -> str:
    """A file-safe record name: path separators and odd characters become ``_``."""
    name = _UNSAFE.sub("_", text.replace("/", "__")).strip("._")
    if not name:
        raise SourceError(f"{text!r} gives an empty file name")
    return name


def class_name(text: str) -> str:
    """A defect class as the datasets spell it: a lowercase identifier (``NO_PASS`` -> ``no_pass``)."""
    name = re.sub(r"[^a-z0-9_]+", "_", text.strip().lower()).strip("_")
    if not name:
        raise SourceError(f"class {text!r} gives an empty name")
    return name if name[0].isalpha() else f"class_{name}"


def find_image(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` with any image extension (exact name first); ``None`` when absent."""
    exact = folder / stem
    if exact.suffix.lower() in IMAGE_SUFFIXES and exact.is_file():
        return exact
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def split_files(root: Path, suffix: str, what: str) -> dict[str | None, Path]:
    """``{split: file}`` from ``train<suffix>``/``val<suffix>``/``test<suffix>``, or ``{None: the only file}``.

    TAO's classification CSVs and COCO files come either one per split or as a single file
    the project splits itself; anything else is ambiguous and refused.
    """
    found = sorted(p for p in root.glob(f"*{suffix}") if p.is_file() and not p.name.startswith("inspectops-"))
    by_split = {p.stem: p for p in found if p.stem in SPLIT_NAMES}
    if by_split:
        if "train" not in by_split or "val" not in by_split:
            raise SourceError(
                f"{root}: split {what}s need both train{suffix} and val{suffix} (found {sorted(by_split)})"
            )
        return dict(by_split)
    if len(found) == 1:
        return {None: found[0]}
    if not found:
        raise SourceError(f"{root}: no {what} (expected train{suffix} and val{suffix}, or one {what} to split)")
    names = [p.name for p in found]
    raise SourceError(f"{root}: several {what}s {names}; name them train{suffix}, val{suffix}[, test{suffix}]")


def check_unique(records: Iterable[Record]) -> None:
    """Two records writing the same prepared files would overwrite each other."""
    seen: dict[str, str] = {}
    for record in records:
        if record.name in seen:
            raise SourceError(f"{record.where}: name {record.name!r} repeats {seen[record.name]}")
        seen[record.name] = record.where


def assign_splits(
    records: tuple[Record, ...], seed: int, val_fraction: float, test_fraction: float
) -> tuple[Record, ...]:
    """Seeded, per-class split of the records the source did not split itself.

    A source splits all of its records or none: half-given splits are ambiguous (was the
    rest meant to be train?), so they are refused naming a record of each kind.
    """
    given = [r for r in records if r.split is not None]
    if given and len(given) != len(records):
        missing = next(r for r in records if r.split is None)
        raise SourceError(
            f"{missing.where}: has no split while {given[0].where} has one ({given[0].split}); "
            "a source gives a split for every record or for none"
        )
    for record in given:
        if record.split not in SPLIT_NAMES:
            raise SourceError(f"{record.where}: unknown split {record.split!r} (expected one of {list(SPLIT_NAMES)})")
    if given:
        return records
    by_class: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: r.name):
        by_class.setdefault(record.stratum, []).append(record.name)
    split_of: dict[str, str] = {}
    for label in sorted(by_class):
        split_of.update(split_class(label, by_class[label], seed, val_fraction, test_fraction))
    return tuple(replace(r, split=split_of[r.name]) for r in records)
