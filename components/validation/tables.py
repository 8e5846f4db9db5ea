"""Tables that describe the prepared datasets, one row per CSV row or list entry.

Great Expectations checks columns of a table; it cannot open image files. So our own
code reads every dataset file once and turns what it finds into plain columns
(``input_files_present``, ``image_width``, ``mask_binary`` ...), and the expectation
suites then check those columns. Each derived "is it fine" column comes with a detail
column (``missing_input_files``, ``wrong_size_files`` ...) that names the offending
files, so a failure can say *which* file of a row is wrong, not only which row.

Index conventions, so that GX's ``unexpected_index_list`` is directly what a person
looks for in the file:

- classification CSV tables: index ``row`` = 1-based data row (header not counted,
  so the row sits on file line ``row + 1``);
- segmentation list tables: index ``line`` = 1-based line number in the list file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from components.data.formats import (
    SEGMENT_KINDS,
    DatasetLayout,
    classify_image_path,
    golden_image_paths,
    read_segment_list,
)
from components.imageio import ImageReadError, read_image

ROW_INDEX = "row"
LINE_INDEX = "line"
DETAIL_SEPARATOR = "; "

_LOCATING_COLUMNS = ("input_path", "golden_path", "object_name")


class DatasetFileError(ValueError):
    """A dataset file (CSV or list) that is missing or cannot be parsed; the message names it."""


@dataclass(frozen=True)
class ImageProbe:
    """What one full decode of an image file told us."""

    path: Path
    exists: bool
    decodable: bool = False
    width: int | None = None
    height: int | None = None
    binary: bool | None = None  # only for masks: every pixel is 0 or 255
    error: str | None = None


def probe_image(path: Path, as_mask: bool = False) -> ImageProbe:
    """Decode ``path`` fully (a truncated PNG only fails on full decode) and record what was found."""
    if not path.is_file():
        return ImageProbe(path=path, exists=False)
    try:
        pixels = read_image(path, mode="L" if as_mask else None)
    except ImageReadError as error:
        return ImageProbe(path=path, exists=True, error=str(error))
    height, width = pixels.shape[:2]
    binary = bool(np.isin(pixels, (0, 255)).all()) if as_mask else None
    return ImageProbe(path=path, exists=True, decodable=True, width=width, height=height, binary=binary)


class ImageProber:
    """Decodes each file once per validation run, in a few threads.

    PIL releases the GIL while it inflates PNG data, so threads overlap decoding even
    on two cores; the cache keeps a file that several rows share from being read twice.
    """

    def __init__(self, workers: int = 4) -> None:
        self._workers = workers
        self._cache: dict[tuple[Path, bool], ImageProbe] = {}

    def prefetch(self, paths: Iterable[Path], as_mask: bool = False) -> None:
        """Probe every not yet seen path of ``paths`` in parallel."""
        todo = sorted({Path(p) for p in paths if (Path(p), as_mask) not in self._cache})
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=self._workers) as pool:
            for probe in pool.map(lambda p: probe_image(p, as_mask), todo):
                self._cache[(probe.path, as_mask)] = probe

    def probe(self, path: Path, as_mask: bool = False) -> ImageProbe:
        key = (Path(path), as_mask)
        if key not in self._cache:
            self._cache[key] = probe_image(key[0], as_mask)
        return self._cache[key]


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class CsvTable:
    """A classification CSV as written (index ``row``) and the file line each row sits on."""

    frame: pd.DataFrame
    lines: dict[int, int]


def read_classify_csv(path: Path) -> CsvTable:
    """The CSV exactly as written: all cells text, blank cells None, index = 1-based data row.

    Parsed with :mod:`csv` rather than pandas, which would silently turn a row with one
    field too many into an index column, mangle a repeated header name, and forget
    the line numbers of rows after a blank line. Only blank cells are null: ``NA`` or
    ``None`` is a bad label, not a missing one.
    """
    if not path.is_file():
        raise DatasetFileError(f"{path}: dataset file not found")
    try:
        with path.open(newline="") as handle:
            header, records, lines = _parse_csv(path, handle)
    except (csv.Error, UnicodeDecodeError) as error:
        raise DatasetFileError(f"{path}: cannot parse as CSV ({error})") from None
    frame = pd.DataFrame(records, columns=header, dtype=object)
    frame.index = pd.RangeIndex(1, len(records) + 1, name=ROW_INDEX)
    return CsvTable(frame=frame, lines=dict(zip(frame.index, lines, strict=True)))


def _parse_csv(path: Path, handle: TextIO) -> tuple[list[str], list[list[str | None]], list[int]]:
    """Header, padded data rows (blank cell -> None) and line numbers; malformed shapes raise."""
    reader = csv.reader(handle)
    header = next((row for row in reader if any(cell.strip() for cell in row)), None)
    if header is None:
        raise DatasetFileError(f"{path}: empty file, no CSV header")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DatasetFileError(f"{path}: header repeats column(s) {', '.join(repeated)}")
    records: list[list[str | None]] = []
    lines: list[int] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise DatasetFileError(
                f"{path}: line {reader.line_num} has {len(row)} fields but the header has {len(header)}"
            )
        cells = [cell if cell.strip() else None for cell in row]
        records.append(cells + [None] * (len(header) - len(cells)))
        lines.append(reader.line_num)
    return header, records, lines


def read_segment_entries(path: Path) -> pd.DataFrame:
    """Entries of a segmentation list with the line each sits on (blank lines are skipped).

    Names come from :func:`read_segment_list`, the one parser of the format; we only
    pair them with their line numbers.
    """
    if not path.is_file():
        raise DatasetFileError(f"{path}: dataset file not found")
    try:
        names = read_segment_list(path)
        lines = [number for number, text in enumerate(path.read_text().splitlines(), 1) if text.strip()]
    except UnicodeDecodeError as error:
        raise DatasetFileError(f"{path}: not a text file ({error})") from None
    return pd.DataFrame({"name": names}, index=pd.Index(lines, name=LINE_INDEX), dtype=object)


def known_defect_kinds(raw_category_dir: Path) -> tuple[str, ...] | None:
    """Defect kinds of the raw category (its ``ground_truth`` folders), or None when absent.

    Without the raw category (e.g. datasets pulled from a DVC remote alone) the label
    check falls back to the label *shape* only.
    """
    ground_truth = raw_category_dir / "ground_truth"
    if not ground_truth.is_dir():
        return None
    return tuple(sorted(p.name for p in ground_truth.iterdir() if p.is_dir()))


# --------------------------------------------------------------------------- shared row logic


def _join(items: Iterable[object]) -> str:
    return DETAIL_SEPARATOR.join(str(item) for item in items)


def _row_image_facts(probes: Sequence[ImageProbe], size: int | None) -> dict[str, object]:
    """Decodability and size of a row's files, with the names of the files at fault.

    ``image_width``/``image_height`` hold the first size that is not ``size`` (else the
    common size), so a single odd file makes the row fail; they are None when no file
    of the row could be decoded, which the presence/decodability checks report instead.
    ``size`` ``None`` (native-size segmentation, ``data.tiling``): the files at fault are those
    whose size differs from the row's first file.
    """
    present = [p for p in probes if p.exists]
    decoded = [p for p in present if p.decodable]
    expected = (size, size) if size is not None else ((decoded[0].width, decoded[0].height) if decoded else None)
    wrong = [p for p in decoded if (p.width, p.height) != expected]
    reference = wrong[0] if wrong else (decoded[0] if decoded else None)
    return {
        "image_decodable": all(p.decodable for p in present),
        "undecodable_files": _join(p.path for p in present if not p.decodable),
        "image_width": reference.width if reference else None,
        "image_height": reference.height if reference else None,
        "wrong_size_files": _join(f"{p.path} ({p.width}x{p.height})" for p in wrong),
    }


def _finish(frame: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """Object dtype throughout: pandas 2 and 3 then agree, and None stays a GX 'missing'."""
    frame = frame.astype(object)
    frame.index = index
    return frame


# --------------------------------------------------------------------------- classification

_CLASSIFY_FILE_COLUMNS = (
    "object_name",
    "input_files_present",
    "golden_files_present",
    "missing_input_files",
    "missing_golden_files",
    "missing_files",
    "image_decodable",
    "undecodable_files",
    "image_width",
    "image_height",
    "wrong_size_files",
)


def classify_row_files(
    row: Mapping[str, object], images_dir: Path, lights: Sequence[str], num_golden: int
) -> tuple[list[Path], list[Path]]:
    """Input and golden files one CSV row refers to, by TAO's naming rule."""
    input_path, golden_path, name = (str(row[c]) for c in _LOCATING_COLUMNS)
    inputs = [classify_image_path(images_dir, input_path, name, light) for light in lights]
    goldens = [p for light in lights for p in golden_image_paths(images_dir, golden_path, name, light, num_golden)]
    return inputs, goldens


def _all_classify_files(
    records: Iterable[Mapping[str, object]], images_dir: Path, lights: Sequence[str], num_golden: int
) -> list[Path]:
    """Every image the locatable rows refer to, so they can be decoded in one parallel sweep."""
    paths: list[Path] = []
    for row in records:
        if all(row.get(c) is not None for c in _LOCATING_COLUMNS):
            inputs, goldens = classify_row_files(row, images_dir, lights, num_golden)
            paths += inputs + goldens
    return paths


def _classify_row(
    row: Mapping[str, object], images_dir: Path, lights: Sequence[str], num_golden: int, size: int, prober: ImageProber
) -> dict[str, object]:
    empty = [c for c in _LOCATING_COLUMNS if row.get(c) is None]
    if empty:
        reason = f"(cannot locate images: {', '.join(empty)} empty)"
        return {
            "object_name": row.get("object_name"),
            "input_files_present": False,
            "golden_files_present": False,
            "missing_input_files": reason,
            "missing_golden_files": reason,
            "missing_files": reason,
            **_row_image_facts([], size),
        }
    inputs, goldens = classify_row_files(row, images_dir, lights, num_golden)
    input_probes = [prober.probe(p) for p in inputs]
    golden_probes = [prober.probe(p) for p in goldens]
    missing_inputs = [p.path for p in input_probes if not p.exists]
    missing_goldens = [p.path for p in golden_probes if not p.exists]
    return {
        "object_name": row["object_name"],
        "input_files_present": not missing_inputs,
        "golden_files_present": not missing_goldens,
        "missing_input_files": _join(missing_inputs),
        "missing_golden_files": _join(missing_goldens),
        "missing_files": _join(missing_inputs + missing_goldens),
        **_row_image_facts(input_probes + golden_probes, size),
    }


def missing_locating_columns(csv_frame: pd.DataFrame) -> list[str]:
    """CSV columns needed to find a row's images that the file lacks."""
    return [c for c in _LOCATING_COLUMNS if c not in csv_frame.columns]


def classify_files_table(
    csv_frame: pd.DataFrame,
    images_dir: Path,
    lights: Sequence[str],
    num_golden: int,
    size: int,
    prober: ImageProber,
) -> pd.DataFrame:
    """One row per CSV row: are its input and golden images there, decodable, ``size`` square?

    ``csv_frame`` must have the locating columns (see :func:`missing_locating_columns`).
    """
    records = csv_frame.to_dict(orient="records")
    prober.prefetch(_all_classify_files(records, images_dir, lights, num_golden))
    rows = [_classify_row(r, images_dir, lights, num_golden, size, prober) for r in records]
    return _finish(pd.DataFrame(rows, columns=_CLASSIFY_FILE_COLUMNS), csv_frame.index)


# --------------------------------------------------------------------------- segmentation

_SEGMENT_COLUMNS = (
    "name",
    "in_A",
    "in_B",
    "in_label",
    "missing_files",
    "image_decodable",
    "undecodable_files",
    "image_width",
    "image_height",
    "wrong_size_files",
    "mask_binary",
    "non_binary_mask",
    "in_other_split",
    "other_splits",
)


def _segment_row(
    name: str, layout: DatasetLayout, size: int | None, prober: ImageProber, elsewhere: Sequence[str]
) -> dict[str, object]:
    probes = {kind: prober.probe(layout.segment_image(kind, name), as_mask=kind == "label") for kind in SEGMENT_KINDS}
    mask = probes["label"]
    return {
        "name": name,
        "in_A": probes["A"].exists,
        "in_B": probes["B"].exists,
        "in_label": mask.exists,
        "missing_files": _join(p.path for p in probes.values() if not p.exists),
        **_row_image_facts(list(probes.values()), size),
        "mask_binary": mask.binary,
        "non_binary_mask": str(mask.path) if mask.binary is False else "",
        "in_other_split": bool(elsewhere),
        "other_splits": _join(elsewhere),
    }


def segment_table(
    entries: pd.DataFrame,
    layout: DatasetLayout,
    size: int | None,
    prober: ImageProber,
    other_lists: Mapping[str, set[str]],
) -> pd.DataFrame:
    """One row per list entry: are A, B and label there, decodable, ``size`` square (``None``: of one
    size, ``data.tiling``), mask 0/255?

    ``other_lists`` maps each *other* split's list file name to its entries, so that an
    entry shared between splits (train/val leakage) is flagged on the row itself.
    """
    names = [str(n) for n in entries["name"]]
    for kind in SEGMENT_KINDS:
        prober.prefetch((layout.segment_image(kind, n) for n in names), as_mask=kind == "label")
    rows = [
        _segment_row(n, layout, size, prober, sorted(f for f, members in other_lists.items() if n in members))
        for n in names
    ]
    return _finish(pd.DataFrame(rows, columns=_SEGMENT_COLUMNS), entries.index)
