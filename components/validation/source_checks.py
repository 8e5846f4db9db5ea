"""Great Expectations checks of a source before it is imported (``inspectops data import``).

The readers (:mod:`components.data.sources`) already refuse what they cannot parse (a list
entry without its file, a CSV row without a lighting image, a malformed box line). What
needs the pixels is checked here, on one table row per record and one per box:

- every file exists and decodes (a full decode: a truncated PNG fails only there);
- golden, mask and every lighting image have the test image's size (pairs are aligned);
- masks are binary (0/255 or 0/1);
- boxes are non-empty and lie inside their image; their classes are known;
- record names (list entries, object names, pair ids) are unique.

Each failing row is quoted with the file and line that defines it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd

from components.data.sources.records import Record, SourceIndex
from components.imageio import ImageReadError, read_image
from components.validation.validate import (
    DatasetOutcome,
    _Check,
    _gx_context,
    _quiet_gx,
    _run_check,
    failure_lines,
)

SOURCE_UNIT = "record"
FLAGS = ("files_ok", "sizes_agree", "mask_binary", "box_nonempty", "box_inside", "class_known")


@dataclass(frozen=True)
class FileProbe:
    """One full decode: ``(width, height)`` or the reason it failed; masks also report binarity and content."""

    size: tuple[int, int] | None
    error: str | None = None
    binary: bool | None = None
    foreground: bool | None = None
    """Masks: whether any pixel is set (a pair whose mask is empty is a good part)."""


def probe(path: Path, as_mask: bool = False) -> FileProbe:
    if not path.is_file():
        return FileProbe(None, f"{path}: missing")
    try:
        pixels = read_image(path, mode="L" if as_mask else None)
    except ImageReadError as error:
        return FileProbe(None, str(error))
    binary = foreground = None
    if as_mask:
        values = set(np.unique(pixels).tolist())
        binary = bool(values <= {0, 255} or values <= {0, 1})
        foreground = bool(values - {0})
    return FileProbe((pixels.shape[1], pixels.shape[0]), binary=binary, foreground=foreground)


def probe_all(
    index: SourceIndex, workers: int = 4, advance: Callable[[], None] = lambda: None
) -> dict[tuple[Path, bool], FileProbe]:
    """Decode every file once, in threads (PIL releases the GIL while it inflates)."""
    from concurrent.futures import ThreadPoolExecutor

    todo = sorted({(path, path == r.mask) for r in index.records for path in r.files() if path not in r.sidecars})
    found: dict[tuple[Path, bool], FileProbe] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for key, result in zip(todo, pool.map(lambda key: probe(*key), todo), strict=True):
            found[key] = result
            advance()
    return found


def _record_rows(record: Record, probes: dict[tuple[Path, bool], FileProbe], known: set[str] | None) -> list[dict]:
    image = probes[(record.image, False)]
    problems, sizes_agree = [], True
    files_ok = True
    for path in record.files():
        if path in record.sidecars:
            continue
        found = probes[(path, path == record.mask)]
        if found.error is not None:
            files_ok = False
            problems.append(found.error)
        elif image.size is not None and found.size != image.size:
            sizes_agree = False
            problems.append(
                f"{path} is {found.size[0]}x{found.size[1]}, its test image {record.image} is {image.size[0]}x{image.size[1]}"
            )
    mask_binary = True
    if record.mask is not None:
        mask = probes[(record.mask, True)]
        if mask.binary is False:
            mask_binary = False
            problems.append(f"{record.mask}: mask values are not binary (0/255 or 0/1)")
    rows = [
        {
            "name": record.name,
            "where": record.where,
            "files_ok": files_ok,
            "sizes_agree": sizes_agree,
            "mask_binary": mask_binary,
            "box_nonempty": True,
            "box_inside": True,
            "class_known": True,
            "problem": f"{record.where}: " + "; ".join(problems) if problems else "",
        }
    ]
    for instance in record.instances:
        box = instance.box
        nonempty = box.width > 0 and box.height > 0
        inside = image.size is None or box.inside(*image.size)
        class_known = known is None or box.label in known
        issues = []
        if not nonempty:
            issues.append(f"box ({box.x1:g}, {box.y1:g}, {box.x2:g}, {box.y2:g}) is empty")
        if not inside and image.size is not None:
            issues.append(
                f"box ({box.x1:g}, {box.y1:g}, {box.x2:g}, {box.y2:g}) leaves the {image.size[0]}x{image.size[1]} image"
            )
        if not class_known:
            issues.append(f"class {box.label!r} is not one of {sorted(known or [])}")
        rows.append(
            {
                "name": None,
                "where": instance.where or record.where,
                "files_ok": True,
                "sizes_agree": True,
                "mask_binary": True,
                "box_nonempty": nonempty,
                "box_inside": inside,
                "class_known": class_known,
                "problem": f"{instance.where or record.where}: " + "; ".join(issues) if issues else "",
            }
        )
    return rows


def source_table(
    index: SourceIndex, probes: dict[tuple[Path, bool], FileProbe], classes: tuple[str, ...] = ()
) -> pd.DataFrame:
    """One row per record and per box; the index is 1-based."""
    known = set(classes) if classes else None
    rows = [row for record in index.records for row in _record_rows(record, probes, known)]
    frame = pd.DataFrame(rows)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name=SOURCE_UNIT)
    return frame


def source_suite(fmt: str) -> gx.ExpectationSuite:
    """The expectations every format's table must meet (the columns are our own flags)."""
    notes = {
        "files_ok": "A missing or truncated image crashes prepare or, worse, the data loader mid-epoch.",
        "sizes_agree": "ChangeNet compares golden and test pixel by pixel: they and the mask must be aligned.",
        "mask_binary": "A change mask is 0/255 (or 0/1); other values are a resized or JPEG-compressed mask.",
        "box_nonempty": "An empty box gives MAL no pixels to learn from.",
        "box_inside": "A box leaving its image was drawn on another image or in another unit.",
        "class_known": "A class outside --classes is a typo or a defect the project does not train.",
    }
    expectations = [
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1, notes="An empty source imports nothing."),
        gx.expectations.ExpectColumnValuesToBeUnique(
            column="name", notes="Records name their prepared files; a repeated name overwrites another record."
        ),
    ]
    expectations += [
        gx.expectations.ExpectColumnValuesToBeInSet(
            column=flag, value_set=[True], notes=notes[flag], meta={"detail_column": "problem", "detail_verb": ""}
        )
        for flag in FLAGS
    ]
    return gx.ExpectationSuite(name=f"source_{fmt.replace('-', '_')}", expectations=expectations)


def check_source(
    index: SourceIndex, classes: tuple[str, ...] = (), advance: Callable[[], None] = lambda: None
) -> tuple[DatasetOutcome, list[str], dict[tuple[Path, bool], FileProbe]]:
    """Run the format's suite on the source's table; return the outcome, its failure lines and every file's probe.

    The probes (sizes, mask content) let import profile the data without decoding it twice.
    """
    probes = probe_all(index, advance=advance)
    frame = source_table(index, probes, classes)
    with _quiet_gx(), tempfile.TemporaryDirectory() as docs:
        context = _gx_context(Path(docs))
        check = _Check(f"source_{index.format}", source_suite(index.format), index.root, SOURCE_UNIT, frame=frame)
        outcome = _run_check(context, check)
    return outcome, failure_lines(outcome), probes


def count_files(index: SourceIndex) -> int:
    """How many files :func:`probe_all` decodes (for a progress bar)."""
    return len({(path, path == r.mask) for r in index.records for path in r.files() if path not in r.sidecars})
