"""Aligned golden/test pairs from an inspection machine, matched by file-name pattern.

::

    <root>/0001_test.png  0001_golden.png  0001.txt  0001_mask.png     (--test-pattern '{id}_test.png', ...)
    <root>/0002_test.png  0002_golden.png                              (no boxes, no mask: a good part)

Box files hold one box a line, ``x1,y1,x2,y2[,class]`` in pixels of the test image (the
separator is ``--box-separator``; blank lines and ``#`` comments are skipped). Boxes become
COCO boxes (MAL can label them); a mask becomes the segmentation label. A pair with boxes
but no mask is left out of the segmentation dataset (its pixels are unknown) and kept
for MAL and classification. A ``{split}`` field in the patterns gives the source's own
split; without it the split is drawn (seeded, per class).
"""

from __future__ import annotations

import re
from pathlib import Path

from components.config import Params
from components.data.sources.common import check_unique, class_name, safe_name
from components.data.sources.options import SourceOptions
from components.data.sources.records import DEFECT, GOOD, Box, Instance, Record, SourceError, SourceIndex
from components.data.split import SPLIT_NAMES


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``{id}_test.png`` -> a regex over root-relative POSIX paths with groups ``id`` (and ``split``)."""
    parts = re.split(r"(\{id\}|\{split\})", pattern)
    body = "".join(
        "(?P<id>[^/]+?)"
        if part == "{id}"
        else f"(?P<split>{'|'.join(SPLIT_NAMES)})"
        if part == "{split}"
        else re.escape(part)
        for part in parts
    )
    return re.compile(f"^{body}$")


def _fill(pattern: str, pair_id: str, split: str | None) -> str:
    return pattern.replace("{id}", pair_id).replace("{split}", split or "")


def parse_boxes(path: Path, separator: str, options: SourceOptions) -> tuple[Instance, ...]:
    """The boxes of one box file; a malformed line raises naming ``file:line``."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: cannot read box file ({error})") from None
    instances = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        fields = [f.strip() for f in line.split(separator)]
        if len(fields) not in (4, 5):
            raise SourceError(
                f"{where}: expected x1{separator}y1{separator}x2{separator}y2[{separator}class], got {raw!r}"
            )
        try:
            x1, y1, x2, y2 = (float(v) for v in fields[:4])
        except ValueError:
            raise SourceError(f"{where}: box coordinates must be numbers, got {raw!r}") from None
        label = class_name(fields[4]) if len(fields) == 5 and fields[4] else DEFECT
        if options.classes and label not in options.classes:
            raise SourceError(f"{where}: class {label!r} is not a known class {list(options.classes)}")
        instances.append(Instance(box=Box(x1, y1, x2, y2, label), where=where))
    return tuple(instances)


def read_pairs(root: Path, options: SourceOptions, params: Params | None = None) -> SourceIndex:
    """Records of every test image matching ``test_pattern``; raise :class:`SourceError` naming the file."""
    del params
    if not root.is_dir():
        raise SourceError(f"{root}: pairs folder not found")
    test_re = pattern_regex(options.test_pattern)
    records: list[Record] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        match = test_re.match(path.relative_to(root).as_posix())
        if match is None:
            continue
        pair_id, split = match.group("id"), match.groupdict().get("split")
        golden = root / _fill(options.golden_pattern, pair_id, split)
        if not golden.is_file():
            raise SourceError(f"{path}: its golden {golden} is missing (--golden-pattern {options.golden_pattern!r})")
        boxes_path = root / _fill(options.box_pattern, pair_id, split) if options.box_pattern else None
        mask_path = root / _fill(options.mask_pattern, pair_id, split) if options.mask_pattern else None
        instances = (
            parse_boxes(boxes_path, options.box_separator, options) if boxes_path and boxes_path.is_file() else ()
        )
        mask = mask_path if mask_path is not None and mask_path.is_file() else None
        label = instances[0].box.label if instances else (None if mask is not None else GOOD)
        records.append(
            Record(
                name=safe_name(f"{split}_{pair_id}" if split else pair_id),
                image=path,
                golden=golden,
                mask=mask,
                masked=mask is not None or not instances,
                label=label,
                instances=instances,
                split=split,
                where=str(path),
                sidecars=(boxes_path,) if instances and boxes_path is not None else (),
            )
        )
    if not records:
        raise SourceError(f"{root}: no file matches --test-pattern {options.test_pattern!r}")
    check_unique(records)
    classes = {i.box.label for r in records for i in r.instances} | {DEFECT for r in records if r.label is None}
    return SourceIndex(root=root, format="pairs", records=tuple(records), classes=tuple(sorted(classes)))
