"""One pipeline run at a time per set of outputs: a lock file beside the artifacts a run writes.

Two runs on one checkout (a scheduled retrain and someone's ``inspectops pipeline run``, or two
deployment runs sent to one worker) would write the same datasets, checkpoints and ``dvc.lock``
at once and leave a mix of both. The second run therefore stops before it touches anything,
and says which run holds the outputs and since when.

The lock is an advisory ``flock`` on ``<artifacts_dir>/.pipeline.lock``: the kernel releases it
when the holder exits, however it exits (``kill -9`` included), so a crashed run never leaves a
stale lock behind. The file itself only describes the holder for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["LOCK_NAME", "PipelineBusyError", "pipeline_lock"]

LOCK_NAME = ".pipeline.lock"


class PipelineBusyError(RuntimeError):
    """Another pipeline run holds these outputs; this run changed nothing."""


def _describe(holder: dict[str, str]) -> str:
    parts = [f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}", f"started {holder.get('started', '?')}"]
    if holder.get("params"):
        parts.append(f"params {holder['params']}")
    if holder.get("flow_run"):
        parts.append(f"Prefect flow run {holder['flow_run']}")
    return ", ".join(parts)


def _read_holder(fd: int) -> dict[str, str]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536) or b"{}")
    except (OSError, ValueError):  # written a moment ago by a holder still starting: describe it as unknown
        return {}


@contextmanager
def pipeline_lock(artifacts_dir: Path, **owner: str) -> Iterator[Path]:
    """Hold the outputs under ``artifacts_dir`` for this run, or raise :class:`PipelineBusyError` at once.

    ``owner``: what the message of a refused run shows about this one (``params``, ``flow_run``).
    """
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    path = artifacts_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise PipelineBusyError(
            f"another pipeline run is writing {artifacts_dir} ({_describe(holder)}); this run stopped before "
            "changing anything. Wait for that run to finish, or stop it, then start again."
        ) from None
    try:
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        holder = {"pid": str(os.getpid()), "host": socket.gethostname(), "started": started, **owner}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
