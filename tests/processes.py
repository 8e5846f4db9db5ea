"""Helpers for tests that start servers as child processes (Prefect, MLflow): a free port, a health wait, a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group of a child started with ``start_new_session=True``; SIGKILL if it lingers.

    Servers fork workers (uvicorn, MLflow's job consumers): stopping the group stops them all.
    """
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_until_healthy(
    url: str, process: subprocess.Popen | None = None, log: Path | None = None, timeout: float = 120
) -> None:
    """Poll ``url`` until it answers 200; fail at once, with the log's tail, if ``process`` exits first."""
    tail = (lambda: "\n" + log.read_text()[-3000:]) if log is not None else (lambda: "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server behind {url} exited with {process.returncode}:{tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet, or an HTTP error while it starts
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {timeout} s{tail()}")
