"""A stand-in entry point for the prefork server's tests: reports what the child process became."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    """Print the child's view of its process, read a line from stdin, exit with ``argv[1]``."""
    import torch  # preloaded by the server: already in the child

    line = sys.stdin.readline().strip()
    print(
        json.dumps(
            {
                "argv": sys.argv,
                "cwd": os.getcwd(),
                "marker": os.environ.get("PREFORK_MARKER"),
                "stdin": line,
                "threads": torch.get_num_threads(),
                "pid": os.getpid(),
                "components_from": sys.modules["tests.prefork_probe"].__file__,
            }
        )
    )
    print("to stderr", file=sys.stderr)
    code = sys.argv[1]
    if code == "raise":
        raise RuntimeError("probe failed on purpose")
    sys.exit(int(code))
