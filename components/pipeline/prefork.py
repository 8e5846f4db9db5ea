"""Warm stage processes: a prefork server that has torch, Lightning, timm and MLflow imported once.

Why: every DVC stage runs ``inspectops <command>`` as a new process, and on a 2-core CPU without
AVX-512 importing torch, torchvision, timm, Lightning and MLflow takes 12-15 s, before any work.
The default pipeline has some twenty model stages, so a third of its time was imports. While a
flow runs, this server holds those libraries imported and forks a child per stage command; the
child starts with them loaded, like a DataLoader worker forked from a trainer.

The contract (the client side is :mod:`components.launcher`):

- The flow starts the server (:func:`warm_stages`) and puts its socket path in
  :data:`SOCKET_ENV`; DVC passes the environment on to the stage commands it runs.
- ``inspectops`` connects, sends its entry point, argv, working directory, environment and ``sys.path`` plus
  its stdin/stdout/stderr file descriptors; the forked child takes all of them over, runs the
  command through the same CLI, and sends back its exit code. The client waits for it and exits
  with it, so DVC sees an ordinary process.
- Nothing of this project is imported before the fork: the child imports ``components`` from
  the client's ``sys.path``, so a stage always runs the checkout it was started in.
- Whatever goes wrong (no server yet, a dead one, a refused connection), the client runs the
  command itself: the server only ever saves time.

Forking after the imports is safe for the same reason a forked DataLoader worker is: the parent
does no numeric work and opens no file, database or thread pool of its own before it forks.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["PRELOAD", "SOCKET_ENV", "recv_request", "serve", "wait_ready", "warm_stages"]

SOCKET_ENV = "INSPECTOPS_STAGE_SERVER"
"""Path of the server's Unix socket; set while a flow runs, read by :mod:`components.launcher`."""
PRELOAD = ("torch", "torchvision", "timm", "lightning", "mlflow", "onnx", "onnxruntime")
"""Third-party packages only: never this project's own modules (see the module docstring)."""
_HEADER = struct.Struct("!Q")  # payload length, sent with the three file descriptors
_READY_SECONDS = 120.0


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError(f"stage request cut short: {left} of {size} bytes missing")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """A request as :func:`components.launcher.run_in_server` sends it: its length and the descriptors in one
    message, then the JSON payload; returns the request and the descriptors it carried."""
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(header) != _HEADER.size:
        raise ConnectionError("stage request without a header")
    (size,) = _HEADER.unpack(header)
    return json.loads(_recv_exact(conn, size)), list(fds)


def _take_over(request: dict[str, Any], fds: list[int]) -> None:
    """Become the client's process: its stdio, directory, environment, path and arguments."""
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, write_through=True)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[:] = request["path"]
    sys.argv = list(request["argv"])
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # torch read the server's environment when it was imported
        import torch

        torch.set_num_threads(int(threads))


def _run_command(conn: socket.socket) -> int:
    """In the forked child: take the request over, run its entry point, return the exit code."""
    request, fds = recv_request(conn)
    conn.sendall(_HEADER.pack(os.getpid()))  # the client forwards its signals to this pid
    _take_over(request, fds)
    code = 0
    try:
        module, _, name = request["entry"].partition(":")
        getattr(importlib.import_module(module), name)()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if done.code is not None and not isinstance(done.code, int):
            print(done.code, file=sys.stderr)
    except BaseException:  # the traceback a normal process would have printed
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    return code


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def serve(socket_path: str) -> None:
    """Import :data:`PRELOAD`, then fork a child per connection until terminated."""
    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # an optional extra not installed: its stages import it themselves
            importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path + ".tmp")
    listener.listen(16)
    os.replace(socket_path + ".tmp", socket_path)  # the path appears only once connections are accepted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        conn, _ = listener.accept()
        _reap()
        pid = os.fork()
        if pid == 0:
            listener.close()
            code = 1
            try:
                code = _run_command(conn)
            finally:
                with contextlib.suppress(OSError):
                    conn.sendall(_HEADER.pack(code & 0xFF))
                os._exit(code & 0xFF)
        conn.close()


@contextlib.contextmanager
def warm_stages() -> Iterator[str | None]:
    """Run a prefork server for the ``with`` block and point :data:`SOCKET_ENV` at it.

    Yields the socket path, or ``None`` when one is already set (a flow inside a flow's stage) or
    the platform has no ``fork``. Stage commands that start before the server is ready simply
    run on their own.
    """
    if SOCKET_ENV in os.environ or not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="inspectops-stages-"))
    path = str(folder / "server.sock")
    server = subprocess.Popen(  # run as a file, not ``-m``: the server must not import ``components`` itself
        [sys.executable, str(Path(__file__).resolve()), path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the flow, which then stops the server
    )
    os.environ[SOCKET_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(SOCKET_ENV, None)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()


def wait_ready(path: str, seconds: float = _READY_SECONDS) -> bool:
    """Whether the server at ``path`` accepts connections within ``seconds`` (for tests and tools)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    serve(sys.argv[1])
