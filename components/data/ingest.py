"""Ingest one MVTec AD category into ``<out_root>/<category>/``, checked and all-or-nothing.

The source may be an MVTec AD root folder (holding ``<category>/``), a category folder
itself, or an archive (``.tar.xz``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar``, ``.zip``)
holding the category, alone or next to other categories, at its top or under one or two
wrapping folders.

Why it is built this way:

- Only the layout parts are copied (``train``, ``test``, ``ground_truth`` image files and
  ``license.txt``/``readme.txt``), byte for byte: re-encoding would change pixels or
  hashes, and junk (``.DS_Store``, ``__MACOSX``, ``._*``) must not reach DVC.
- The copy is staged with :func:`components.fsutil.atomic_dir` and validated *before* the
  rename, so a failed ingest never leaves a half-written category and never touches the
  previous one.
- Archives come from outside, so every member is checked before anything is written
  (absolute paths, ``..``, links leaving the archive, device files); tar extraction also
  uses Python's ``data`` filter where available, and zip members are written by hand so
  nothing is ever followed or created outside the scratch folder.
- Every problem is raised as :class:`IngestError` (``LayoutError`` and ``ImageReadError``
  are converted, not passed through), so callers catch one type; messages name the source
  file or archive member, not the scratch copy.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from components.data.layout import IMAGE_SUFFIXES, CategoryIndex, LayoutError, scan_category
from components.fsutil import atomic_dir
from components.imageio import ImageReadError, read_image

logger = logging.getLogger(__name__)

LAYOUT_DIRS = ("train", "test", "ground_truth")
"""Folders of an MVTec AD category; each holds ``<class>/<image>`` files."""
EXTRA_FILES = ("license.txt", "readme.txt")
"""Top-level files of a category kept for provenance (the licence travels with the data)."""
ARCHIVE_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar", ".zip")
MAX_WRAPPING_DEPTH = 2
"""How many folders may wrap a category inside an archive (``mvtec_anomaly_detection/<cat>/``)."""
JUNK_DIRS = ("__MACOSX",)
CATEGORY_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")  # same rule as params.yaml data.category
MASK_VALUES = (0, 255)
_CORRUPT_ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    gzip.BadGzipFile,
)
"""What truncated or damaged archives raise while being read."""


class IngestError(ValueError):
    """A source that cannot be ingested; the message names the file or archive member at fault."""


@dataclass(frozen=True)
class _Entry:
    """One file to ingest: where it is read from and its path inside the category."""

    source: Path
    relative: PurePosixPath


# --------------------------------------------------------------------------- public API


def ingest(source: Path | str, category: str, out_root: Path | str, progress: bool = False) -> dict[str, int]:
    """Copy, validate and atomically publish ``category`` from ``source`` as ``out_root/category``.

    Returns the counts ``train_good``, ``test_good``, ``test_defect``, ``masks`` and
    ``defect_kinds`` of the published category. Raises :class:`IngestError` on any data
    problem; ``out_root/category`` is then exactly as it was before the call.
    """
    _check_category_name(category)
    source, out_root = Path(source), Path(out_root)
    if not source.exists():
        raise IngestError(f"{source}: source not found")
    with _removing_new_dirs_on_failure(out_root):
        if source.is_file():
            with _scratch_dir(out_root) as scratch:
                category_dir, label = extract_category(source, category, scratch)
                return _publish(category_dir, label, out_root / category, progress)
        category_dir = locate_category_dir(source, category)
        return _publish(category_dir, str(category_dir), out_root / category, progress)


def locate_category_dir(folder: Path, category: str) -> Path:
    """Return the category folder: ``folder`` itself if it has ``train/`` and ``test/``, else ``folder/category``.

    A folder holding the layout is accepted whatever its name, because the caller names
    the category explicitly (e.g. a renamed ``transistor_1024/`` folder).
    """
    if _looks_like_category(folder):
        return folder
    candidate = folder / category
    if candidate.is_dir():
        return candidate
    found = sorted(p.name for p in folder.iterdir() if _looks_like_category(p)) if folder.is_dir() else []
    hint = f"; it holds categories {found}" if found else ""
    raise IngestError(
        f"{folder}: neither an MVTec AD category folder (train/, test/) nor a root holding {category}/{hint}"
    )


def extract_category(archive: Path, category: str, scratch: Path) -> tuple[Path, str]:
    """Safely extract the layout files of ``category`` from ``archive`` into ``scratch``.

    Returns the extracted category folder and a label (``archive::prefix``) used in messages.
    """
    name = archive.name.lower()
    if name.endswith(".zip"):
        prefix = _extract_zip(archive, category, scratch)
    elif name.endswith(ARCHIVE_SUFFIXES) or tarfile.is_tarfile(archive):
        prefix = _extract_tar(archive, category, scratch)
    else:
        raise IngestError(f"{archive}: not a folder or a supported archive ({', '.join(ARCHIVE_SUFFIXES)})")
    label = f"{archive}::{'/'.join(prefix) or '.'}"
    return scratch.joinpath(*prefix), label


# --------------------------------------------------------------------------- publishing


def _publish(category_dir: Path, label: str, target: Path, progress: bool) -> dict[str, int]:
    """Stage a copy of ``category_dir``, validate the staged copy, then rename it onto ``target``."""
    entries = _plan_copy(category_dir)
    with atomic_dir(target) as staging:
        _copy_entries(entries, staging, progress)
        try:
            index = _validate(staging)
        except IngestError as error:
            raise IngestError(str(error).replace(str(staging), label)) from error.__cause__
        counts = _counts(index, staging)
    logger.info("ingested %s from %s: %s", target, label, counts)
    return counts


def _plan_copy(category_dir: Path) -> list[_Entry]:
    """List the layout files of a category folder; everything else (junk, stray files) is skipped."""
    entries: list[_Entry] = []
    for part in LAYOUT_DIRS:
        part_dir = category_dir / part
        if not part_dir.is_dir():
            continue
        for class_dir in sorted(p for p in part_dir.iterdir() if p.is_dir() and not _is_junk(p.name)):
            for file in sorted(class_dir.iterdir()):
                if file.is_file() and not _is_junk(file.name) and file.suffix.lower() in IMAGE_SUFFIXES:
                    entries.append(_Entry(file, PurePosixPath(part, class_dir.name, file.name)))
    for name in EXTRA_FILES:
        if (category_dir / name).is_file():
            entries.append(_Entry(category_dir / name, PurePosixPath(name)))
    return entries


def _copy_entries(entries: list[_Entry], staging: Path, progress: bool) -> None:
    """Copy bytes only (no metadata): read-only sources must not yield read-only staged files."""
    with _progress_callback(len(entries), progress) as advance:
        for entry in entries:
            destination = staging.joinpath(*entry.relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(entry.source, destination)
            except FileNotFoundError as error:  # e.g. a dangling symlink in the source
                raise IngestError(f"{entry.source}: cannot be read ({error.strerror})") from error
            advance()


@contextmanager
def _progress_callback(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """Yield a per-file callback; draws a rich bar only when asked, importing rich lazily."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("copying", total=total)
        yield lambda: bar.advance(task)


def _counts(index: CategoryIndex, staging: Path) -> dict[str, int]:
    test_good = sum(1 for s in index.test if s.is_good)
    return {
        "train_good": len(index.train_good),
        "test_good": test_good,
        "test_defect": len(index.test) - test_good,
        "masks": len(_files_under(staging / "ground_truth")),
        "defect_kinds": len(index.defect_kinds),
    }


# --------------------------------------------------------------------------- validation


def _validate(root: Path) -> CategoryIndex:
    """Check layout and sizes (``scan_category``), then decode every image and check every mask."""
    try:
        index = scan_category(root)
    except LayoutError as error:
        raise IngestError(str(error)) from error
    mask_dir = root / "ground_truth"
    for sample in index.samples:
        _check_decodes(sample.image)
    for mask in _files_under(mask_dir):
        _check_mask(mask)
    return index


def _check_decodes(path: Path) -> None:
    """Decode the whole file: a truncated PNG has a valid header and only fails here."""
    try:
        read_image(path, mode=None)
    except ImageReadError as error:
        raise IngestError(str(error)) from error


def _check_mask(path: Path) -> None:
    """A mask must be single-channel and hold only 0 and 255: anything else is an ambiguous label."""
    try:
        pixels = read_image(path, mode=None)
    except ImageReadError as error:
        raise IngestError(str(error)) from error
    if pixels.ndim != 2:
        with Image.open(path) as image:
            mode = image.mode
        raise IngestError(f"{path}: mask must be a single-channel 0/255 image, got mode {mode}")
    if pixels.dtype == bool:  # PIL mode "1" is binary by construction
        return
    bad = sorted(set(np.unique(pixels).tolist()) - set(MASK_VALUES))
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise IngestError(f"{path}: mask is not binary 0/255; it also holds the values {shown}")


def _files_under(folder: Path) -> list[Path]:
    """Image files of ``folder/<class>/``, the only depth the layout uses."""
    if not folder.is_dir():
        return []
    return sorted(f for d in folder.iterdir() if d.is_dir() for f in d.iterdir() if f.is_file())


# --------------------------------------------------------------------------- archives: selection


def _member_parts(name: str) -> tuple[str, ...]:
    """Split a member name on ``/`` (and ``\\``, which Windows zip tools emit), dropping ``.`` parts."""
    return tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))


def _split_layout(parts: tuple[str, ...]) -> tuple[tuple[str, ...], bool] | None:
    """Split a member at the category it belongs to: ``(prefix, is_layout_dir_member)`` or None.

    ``a/transistor/train/good/000.png`` -> ``(("a", "transistor"), True)``;
    ``transistor/license.txt`` -> ``(("transistor",), False)``. Only members of the exact
    ``<part>/<class>/<file>`` shape (or a top-level extra file) count; junk never does.
    """
    if any(_is_junk(p) for p in parts):
        return None
    for depth in range(min(len(parts), MAX_WRAPPING_DEPTH + 1)):
        rest = parts[depth:]
        if rest[0] in LAYOUT_DIRS and len(rest) == 3:
            return parts[:depth], True
        if len(rest) == 1 and rest[0] in EXTRA_FILES:
            return parts[:depth], False
    return None


def _preferred(prefix: tuple[str, ...], category: str) -> bool:
    """Prefixes extracted on the first pass: the archive root or a folder named like the category."""
    return not prefix or prefix[-1] == category


def _choose_prefix(prefixes: set[tuple[str, ...]], category: str, archive: Path) -> tuple[str, ...]:
    """Pick the category inside the archive: exact name, else the archive root, else its only category."""
    named = sorted(p for p in prefixes if p and p[-1] == category)
    if len(named) == 1:
        return named[0]
    shown = sorted("/".join(p) or "<archive root>" for p in prefixes)
    if len(named) > 1:
        raise IngestError(f"{archive}: holds category {category!r} more than once: {shown}")
    if () in prefixes:
        return ()
    if len(prefixes) == 1:
        return next(iter(prefixes))
    if not prefixes:
        raise IngestError(f"{archive}: holds no MVTec AD category (no <category>/train|test|ground_truth/ files)")
    raise IngestError(f"{archive}: holds no category {category!r}; it holds {shown}")


def _belongs(parts: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    split = _split_layout(parts)
    return split is not None and split[0] == prefix


# --------------------------------------------------------------------------- archives: tar


def _extract_tar(archive: Path, category: str, scratch: Path) -> tuple[str, ...]:
    """Extract in one streaming pass when the category is where expected; a second pass otherwise.

    Streaming matters for the official ``.tar.xz`` files: listing members first would
    decompress the whole archive twice.
    """
    prefixes: set[tuple[str, ...]] = set()
    extracted: set[tuple[str, ...]] = set()

    def first_pass(parts: tuple[str, ...]) -> bool:
        split = _split_layout(parts)
        if split is None:
            return False
        if split[1]:
            prefixes.add(split[0])
        if _preferred(split[0], category):
            extracted.add(split[0])
            return True
        return False

    _tar_pass(archive, scratch, first_pass)
    chosen = _choose_prefix(prefixes, category, archive)
    if chosen not in extracted:
        _tar_pass(archive, scratch, lambda parts: _belongs(parts, chosen))
    return chosen


def _tar_pass(archive: Path, scratch: Path, wanted: Callable[[tuple[str, ...]], bool]) -> None:
    """Check every member (even unwanted ones: a hostile archive is refused whole) and extract the wanted."""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                parts = _checked_tar_member(member, archive)
                if (member.isfile() or member.issym() or member.islnk()) and wanted(parts):
                    _extract_tar_member(tar, member, scratch, archive)
    except (*_CORRUPT_ARCHIVE_ERRORS, OSError) as error:
        if not _is_corrupt_archive(error):
            raise
        raise IngestError(f"{archive}: not a readable tar archive ({error})") from error


def _is_corrupt_archive(error: BaseException) -> bool:
    """Decoder errors mean a bad archive; other OS errors (disk full, permissions) are not ours to hide.

    ``bz2`` reports bad data as a bare ``OSError`` without an errno, hence the errno test.
    """
    if isinstance(error, _CORRUPT_ARCHIVE_ERRORS):
        return True
    return isinstance(error, OSError) and error.errno is None


def _checked_tar_member(member: tarfile.TarInfo, archive: Path) -> tuple[str, ...]:
    """Refuse absolute or ``..`` names, links leaving the archive and device or fifo members."""
    where = f"{archive}: member {member.name!r}"
    parts = _checked_name(member.name, where)
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise IngestError(f"{where}: device, fifo or special members are not allowed")
    if member.issym():
        _check_link_inside(parts[:-1], member.linkname, where)
    if member.islnk():
        _check_link_inside((), member.linkname, where)  # hard links are relative to the archive root
    return parts


def _check_link_inside(base: tuple[str, ...], linkname: str, where: str) -> None:
    if linkname.startswith(("/", "\\")) or _is_drive(linkname):
        raise IngestError(f"{where}: link to absolute path {linkname!r} is not allowed")
    depth = len(base)
    for part in re.split(r"[/\\]", linkname):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            raise IngestError(f"{where}: link target {linkname!r} points outside the archive")


def _extract_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, scratch: Path, archive: Path) -> None:
    """Extract with the stdlib ``data`` filter on top of our own checks (defence in depth)."""
    _check_destination(scratch, _member_parts(member.name), member, archive)
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        tar.extract(member, path=scratch, set_attrs=False, **kwargs)
    except tarfile.TarError as error:  # FilterError and friends
        raise IngestError(f"{archive}: member {member.name!r} refused: {error}") from error


def _check_destination(scratch: Path, parts: tuple[str, ...], member: tarfile.TarInfo, archive: Path) -> None:
    """Resolve through links extracted so far: a chain of in-archive links can still lead outside."""
    root = scratch.resolve()
    destination = root.joinpath(*parts[:-1]).resolve() / parts[-1]
    escapes = not destination.is_relative_to(root)
    if member.issym():
        escapes = escapes or not (destination.parent / member.linkname).resolve().is_relative_to(root)
    if escapes:
        raise IngestError(f"{archive}: member {member.name!r} resolves outside the extraction folder")


# --------------------------------------------------------------------------- archives: zip


def _extract_zip(archive: Path, category: str, scratch: Path) -> tuple[str, ...]:
    """Plan from the central directory (cheap for zip), then write only the chosen members by hand."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [(info, _checked_zip_member(info, archive)) for info in zf.infolist()]
            prefixes = {s[0] for _, parts in infos if (s := _split_layout(parts)) is not None and s[1]}
            chosen = _choose_prefix(prefixes, category, archive)
            for info, parts in infos:
                if not info.is_dir() and _belongs(parts, chosen):
                    _write_zip_member(zf, info, parts, scratch, archive)
    except zipfile.BadZipFile as error:
        raise IngestError(f"{archive}: not a readable zip archive ({error})") from error
    return chosen


def _checked_zip_member(info: zipfile.ZipInfo, archive: Path) -> tuple[str, ...]:
    """Zip has no safe symlink story, so link entries are refused rather than written or followed."""
    where = f"{archive}: member {info.filename!r}"
    parts = _checked_name(info.filename, where)
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        raise IngestError(f"{where}: symlinks are not allowed in zip archives")
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise IngestError(f"{where}: device, fifo or special members are not allowed")
    return parts


def _write_zip_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, parts: tuple[str, ...], scratch: Path, archive: Path
) -> None:
    destination = scratch.joinpath(*parts)
    if not destination.resolve().is_relative_to(scratch.resolve()):  # cannot happen after the name checks
        raise IngestError(f"{archive}: member {info.filename!r} would be written outside the extraction folder")
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zf.open(info) as reader, open(destination, "wb") as writer:
            shutil.copyfileobj(reader, writer, length=1 << 20)
    except _CORRUPT_ARCHIVE_ERRORS as error:
        raise IngestError(f"{archive}: member {info.filename!r} cannot be read ({error})") from error


# --------------------------------------------------------------------------- shared helpers


def _checked_name(name: str, where: str) -> tuple[str, ...]:
    """Member names must be relative and stay inside the extraction folder."""
    if name.startswith(("/", "\\")) or _is_drive(name):
        raise IngestError(f"{where}: absolute paths are not allowed")
    parts = _member_parts(name)
    if ".." in parts:
        raise IngestError(f"{where}: '..' path components are not allowed")
    if not parts:
        raise IngestError(f"{where}: empty member name")
    return parts


def _is_drive(name: str) -> bool:
    return re.match(r"^[A-Za-z]:", name) is not None


def _is_junk(name: str) -> bool:
    """Hidden files (``.DS_Store``, AppleDouble ``._x.png``) and macOS archive folders."""
    return name.startswith(".") or name in JUNK_DIRS or name in ("Thumbs.db", "desktop.ini")


def _looks_like_category(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _check_category_name(category: str) -> None:
    """The category becomes a path component, so it must be a plain name (no ``/`` or ``..``)."""
    if not CATEGORY_PATTERN.match(category):
        raise IngestError(f"category {category!r}: must match {CATEGORY_PATTERN.pattern}")


@contextmanager
def _scratch_dir(out_root: Path) -> Iterator[Path]:
    """A hidden extraction folder next to the output (same disk, no tmpfs limits), always removed."""
    out_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".ingest-extract-", dir=out_root))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _removing_new_dirs_on_failure(folder: Path) -> Iterator[None]:
    """On failure, remove ``folder`` and its parents that this call created, if they are empty."""
    created: list[Path] = []
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    try:
        yield
    except BaseException:
        for path in created:
            try:
                path.rmdir()
            except OSError:
                break
        raise


__all__ = ["ARCHIVE_SUFFIXES", "IngestError", "extract_category", "ingest", "locate_category_dir"]
