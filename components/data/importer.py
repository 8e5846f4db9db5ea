"""``inspectops data import``: bring a folder in one of the source formats into ``data/<format>/<name>``.

Three steps, all-or-nothing:

1. read the folder with its format's reader (a malformed list, CSV, JSON or box file fails
   here, naming the file and line);
2. run the Great Expectations source checks (:mod:`components.validation.source_checks`):
   every file decodes, golden/test/mask sizes agree, masks are binary, boxes are inside and
   non-empty, classes known, names unique;
3. copy exactly the files the records use (byte for byte, relative paths kept) plus the
   format's index files into a staging folder, record the reader options in
   ``inspectops-source.json``, and swap the folder into place
   (:func:`components.fsutil.atomic_dir`). A failure at any step leaves the previous import
   as it was.

``prepare`` then reads the imported folder with the same reader and options.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.data.sources import IMPORT_FORMATS, source_format
from components.data.sources.options import OPTIONS_FILE, SourceOptions
from components.data.sources.records import SourceError, SourceIndex
from components.fsutil import atomic_dir

NAME_PATTERN = r"^[A-Za-z0-9_\-]+$"  # same rule as params.yaml data.category


class SourceCheckError(SourceError):
    """The source parsed but failed its Great Expectations checks; the message lists each failure."""


def _files_to_copy(index: SourceIndex) -> list[Path]:
    files = [*index.meta_files, *(path for record in index.records for path in record.files())]
    unique = list(dict.fromkeys(files))
    root = index.root.resolve()
    for path in unique:
        if not path.resolve().is_relative_to(root):
            raise SourceError(f"{path}: lies outside the source folder {index.root}; import copies one folder")
    return unique


@contextmanager
def _bar(enabled: bool) -> Iterator[Callable[[str, int], Callable[[], None]]]:
    """``start(description, total) -> advance``; a no-op without progress."""
    if not enabled:
        yield lambda description, total: lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()) as progress:

        def start(description: str, total: int) -> Callable[[], None]:
            task = progress.add_task(description, total=total)
            return lambda: progress.advance(task)

        yield start


def import_source(
    fmt: str,
    source: Path | str,
    name: str,
    out_root: Path | str,
    options: SourceOptions | None = None,
    progress: bool = False,
    params_path: Path | str | None = None,
) -> dict[str, Any]:
    """Check ``source`` as ``fmt`` and publish it as ``out_root/name``; return what was found.

    With ``params_path``, also write the params overlay ``params.<name>.yaml`` beside it
    (:mod:`components.data.overlay`): the model families the data supports and the settings it
    implies. A source no family can learn from is refused before anything is copied.

    Raises :class:`SourceError` (or :class:`SourceCheckError`) naming the file and line;
    ``out_root/name`` is then exactly as it was before the call.
    """
    import re

    if fmt not in IMPORT_FORMATS:
        hint = " (MVTec AD: `inspectops data ingest`)" if fmt == "mvtec" else ""
        raise SourceError(f"--format {fmt!r} cannot be imported; one of {list(IMPORT_FORMATS)}{hint}")
    if not re.match(NAME_PATTERN, name):
        raise SourceError(f"--name {name!r} must match {NAME_PATTERN} (it becomes data.category)")
    source, out_root = Path(source), Path(out_root)
    if not source.is_dir():
        raise SourceError(f"{source}: not a folder; import takes the folder holding the {fmt} data")
    options = options or SourceOptions()
    index = source_format(fmt).read(source, options, None)
    from components.data.support import family_support, profile_source
    from components.validation.source_checks import check_source, count_files

    with _bar(progress) as start:
        _, failures, probes = check_source(index, options.classes, start(f"check {fmt} {name}", count_files(index)))
        if failures:
            listed = "\n".join(f"  - {line}" for line in failures)
            raise SourceCheckError(f"{source}: {len(failures)} check(s) failed, nothing was imported:\n{listed}")
        profile = profile_source(index, probes)
        support = family_support(profile)
        if not any(s.applies for s in support.values()):
            listed = "\n".join(f"  - {s.family}: {s.why_not}" for s in support.values())
            raise SourceError(f"{source}: no model family can learn from this data, nothing was imported:\n{listed}")
        overlay = None
        if params_path is not None:
            from components.data.overlay import render_overlay

            overlay = render_overlay(fmt, name, profile, support, Path(params_path))
        files = _files_to_copy(index)
        advance = start(f"copy into {out_root / name}", len(files))
        with atomic_dir(out_root / name) as staging:
            for path in files:
                target = staging / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                advance()
            summary = _summary(index, len(files)) | {"good": profile.good, "defect": profile.defect}
            payload = {"format": fmt, "options": options.to_json(), "found": summary}
            (staging / OPTIONS_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    summary["families"] = {f: s.how or f"not applicable: {s.why_not}" for f, s in support.items()}
    if overlay is not None:
        from components.data.overlay import write_text_atomically

        summary["overlay"] = str(write_text_atomically(*overlay))
    return summary


def _summary(index: SourceIndex, files: int) -> dict[str, Any]:
    splits: dict[str, int] = {}
    for record in index.records:
        key = record.split or "unsplit"
        splits[key] = splits.get(key, 0) + 1
    return {
        "records": len(index.records),
        "files": files,
        "boxes": sum(len(r.instances) for r in index.records),
        "masks": sum(r.mask is not None for r in index.records),
        "splits": dict(sorted(splits.items())),
        "classes": list(index.classes),
        "lights": list(index.lights),
    }
