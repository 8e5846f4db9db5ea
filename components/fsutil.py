"""Atomic file-system writes: an output is either complete or absent, never half-written.

Every stage writes into a temporary sibling and renames it into place at the end
(``os.replace`` is atomic within one file system), so an interrupted or failed run
leaves the previous output untouched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""A full disk, a full quota, or a file past the size limit: the write did not fit."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write that did not fit on the disk (see :data:`NO_SPACE_ERRNOS`)."""
    return isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS


def disk_full_error(error: OSError, path: Path | str) -> OSError:
    """``error`` again, naming ``path``: a library's full-disk error often names no file."""
    return OSError(error.errno, os.strerror(error.errno or errno.ENOSPC), str(path))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _publish_mode(path: Path, directory: bool) -> None:
    """Give a temp file/dir the mode a plain ``open``/``mkdir`` would have (mkstemp uses 0600/0700)."""
    base = 0o777 if directory else 0o666
    path.chmod(base & ~_umask())


@contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    _publish_mode(staging, directory=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup: Path | None = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def atomic_file(target: Path | str, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``target`` for writing; rename it into place on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        _publish_mode(tmp, directory=False)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(target: Path | str, payload: Any) -> Path:
    """Write JSON atomically with sorted keys, so that DVC hashes only change with content."""
    with atomic_file(target) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return Path(target)
