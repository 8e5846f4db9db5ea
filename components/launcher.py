"""The ``inspectops`` command: run in a warm stage process when a flow offers one, else here.

Standard library only, so asking costs milliseconds: when :data:`SOCKET_ENV` names a live
prefork server (:mod:`components.pipeline.prefork`, started by the pipeline flow), the command
runs in a child forked from it, with this process's arguments, directory, environment and
stdio, and this process exits with the child's code. Signals sent to this process (Ctrl-C, a
DVC or Prefect cancel) are passed on to the child. Without a server, or if the hand-over fails
before the child has started, the CLI runs in this process as usual.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys

__all__ = ["main", "run_in_server"]

SOCKET_ENV = "INSPECTOPS_STAGE_SERVER"  # the same name as components.pipeline.prefork.SOCKET_ENV
_HEADER = struct.Struct("!Q")


def _recv_word(conn: socket.socket) -> int | None:
    data = b""
    while len(data) < _HEADER.size:
        chunk = conn.recv(_HEADER.size - len(data))
        if not chunk:
            return None
        data += chunk
    return _HEADER.unpack(data)[0]


CLI_ENTRY = "components.cli:app"


def run_in_server(path: str, argv: list[str], entry: str = CLI_ENTRY) -> int | None:
    """Exit code of ``entry()`` run with ``argv`` by the server at ``path``; ``None`` if it could not be handed over.

    ``entry`` is ``module:callable``, imported in the child from this process's ``sys.path``.
    """
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        payload = json.dumps(
            {"entry": entry, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path}
        )
        socket.send_fds(conn, [_HEADER.pack(len(payload.encode("utf-8")))], [0, 1, 2])
        conn.sendall(payload.encode("utf-8"))
        pid = _recv_word(conn)
    except OSError:
        return None
    if pid is None:
        return None

    def forward(received: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has just ended; its code is on the way
            os.kill(pid, received)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    code = _recv_word(conn)
    return 1 if code is None else code  # the child died without a word (killed): a failure


def main() -> None:
    """Console entry point of ``inspectops``."""
    path = os.environ.get(SOCKET_ENV)
    if path and hasattr(socket, "send_fds"):
        code = run_in_server(path, ["inspectops", *sys.argv[1:]])
        if code is not None:
            sys.exit(code)
    from components.cli import app

    app()


if __name__ == "__main__":
    main()
