"""TAO Visual ChangeNet-Segmentation's layout, read as it is.

::

    <root>/A/<name>.<ext>       test images (any size, any image extension)
    <root>/B/<name>.<ext>       their goldens
    <root>/label/<name>.<ext>   change masks, 0/255 or 0/1
    <root>/list/train.txt       one entry per line: <name> or <name>.<ext>; val.txt, optionally test.txt

The splits are the lists' (never re-drawn). TAO's masks do not name a defect kind, so a
pair whose mask has any foreground pixel is a :data:`~components.data.sources.records.DEFECT`
and the others are good (decided while preparing, when the mask is read anyway).
"""

from __future__ import annotations

from pathlib import Path

from components.config import Params
from components.data.layout import IMAGE_SUFFIXES
from components.data.sources.common import check_unique, find_image, safe_name
from components.data.sources.options import SourceOptions
from components.data.sources.records import DEFECT, Record, SourceError, SourceIndex
from components.data.split import SPLIT_NAMES

FOLDERS = ("A", "B", "label")
REQUIRED_LISTS = ("train", "val")


def list_entries(path: Path) -> list[tuple[int, str]]:
    """``(line number, entry)`` of a list file, blank lines skipped, extension kept as written."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: cannot read list ({error})") from None
    return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


def _stem(entry: str) -> str:
    """The entry's name: an image extension is dropped, any other dot is part of the name (``lot.7_001``)."""
    path = Path(entry)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else entry


def read_tao_segment(root: Path, options: SourceOptions, params: Params | None = None) -> SourceIndex:
    """Records of every list entry; raise :class:`SourceError` naming the list file and line."""
    del options, params
    for folder in (*FOLDERS, "list"):
        if not (root / folder).is_dir():
            raise SourceError(f"{root / folder}: missing; the TAO segmentation layout needs A/, B/, label/ and list/")
    records: list[Record] = []
    seen: dict[str, str] = {}
    for split in SPLIT_NAMES:
        list_path = root / "list" / f"{split}.txt"
        if not list_path.is_file():
            if split in REQUIRED_LISTS:
                raise SourceError(
                    f"{list_path}: missing; the TAO segmentation layout needs list/train.txt and list/val.txt"
                )
            continue
        for number, entry in list_entries(list_path):
            where = f"{list_path}:{number}"
            stem = _stem(entry)
            if stem in seen:
                raise SourceError(f"{where}: entry {entry!r} is listed again (first at {seen[stem]})")
            seen[stem] = where
            files = {folder: find_image(root / folder, entry) or find_image(root / folder, stem) for folder in FOLDERS}
            missing = [folder for folder, found in files.items() if found is None]
            if missing:
                raise SourceError(f"{where}: entry {entry!r} has no file in {', '.join(f'{m}/' for m in missing)}")
            records.append(
                Record(
                    name=safe_name(stem),
                    image=files["A"],
                    golden=files["B"],
                    mask=files["label"],
                    label=None,
                    split=split,
                    where=where,
                )
            )
    check_unique(records)
    if not records:
        raise SourceError(f"{root / 'list'}: the lists hold no entries")
    lists = tuple(p for p in (root / "list" / f"{s}.txt" for s in SPLIT_NAMES) if p.is_file())
    return SourceIndex(root=root, format="tao-segment", records=tuple(records), classes=(DEFECT,), meta_files=lists)
