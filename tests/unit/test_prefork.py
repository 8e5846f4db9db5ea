"""Warm stage processes (``components.pipeline.prefork`` and ``components.launcher``).

A command handed to the server must behave as if ``inspectops`` had run it in its own process:
same arguments, directory, environment, stdin/stdout/stderr and exit code; and without a live
server the command must still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import launcher
from components.pipeline import prefork
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # the server imports torch, timm, Lightning and MLflow once (~15 s)

CLIENT = (
    "import sys; from components.launcher import run_in_server; "
    "code = run_in_server(sys.argv[1], ['inspectops', *sys.argv[2:]], entry='tests.prefork_probe:main'); "
    "sys.exit(99 if code is None else code)"
)


def _client(path: str, *args: str, cwd: Path, stdin: str = "hello\n", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    return subprocess.run(
        [sys.executable, "-c", CLIENT, path, *args],
        cwd=cwd,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with prefork.warm_stages() as path:
        assert path is not None and prefork.wait_ready(path)
        yield path
    assert not Path(path).exists()  # the socket and its folder are gone with the flow


def test_the_child_becomes_the_clients_process(server: str, tmp_path: Path) -> None:
    done = _client(server, "3", cwd=tmp_path, PREFORK_MARKER="from-the-client", OMP_NUM_THREADS="1")
    assert done.returncode == 3, done.stderr
    seen = json.loads(done.stdout.splitlines()[0])
    assert seen["argv"] == ["inspectops", "3"]
    assert Path(seen["cwd"]) == tmp_path
    assert seen["marker"] == "from-the-client"
    assert seen["stdin"] == "hello"
    assert seen["threads"] == 1  # OMP_NUM_THREADS of the client, not of the server
    assert "to stderr" in done.stderr
    assert seen["components_from"].startswith(str(REPO_ROOT))


def test_each_command_gets_a_fresh_child(server: str, tmp_path: Path) -> None:
    first, second = (_client(server, "0", cwd=tmp_path) for _ in range(2))
    pids = {json.loads(done.stdout.splitlines()[0])["pid"] for done in (first, second)}
    assert first.returncode == second.returncode == 0 and len(pids) == 2


def test_an_exception_is_a_traceback_and_exit_code_one(server: str, tmp_path: Path) -> None:
    done = _client(server, "raise", cwd=tmp_path)
    assert done.returncode == 1
    assert "RuntimeError: probe failed on purpose" in done.stderr


def test_without_a_server_the_command_runs_here(tmp_path: Path) -> None:
    assert launcher.run_in_server(str(tmp_path / "no-such.sock"), ["inspectops"]) is None
    done = subprocess.run(
        [sys.executable, "-m", "components.launcher", "pipeline", "stages"],
        cwd=REPO_ROOT,
        env={**os.environ, launcher.SOCKET_ENV: str(tmp_path / "no-such.sock")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "train_segment" in done.stdout


def test_client_and_server_agree_on_the_variable() -> None:
    assert launcher.SOCKET_ENV == prefork.SOCKET_ENV


def test_only_flows_with_model_stages_through_dvc_start_a_server(tmp_path: Path) -> None:
    import contextlib

    from components.pipeline import runner
    from components.pipeline.stages import STAGES

    params = REPO_ROOT / "params.yaml"
    data_only = [stage for stage in STAGES if stage.model_family is None]
    assert data_only and len(data_only) < len(STAGES)
    assert isinstance(runner.warm_stage_processes(params, data_only), contextlib.nullcontext)
    assert not isinstance(runner.warm_stage_processes(params, STAGES), contextlib.nullcontext)
    outside_dvc = tmp_path / "params.yaml"  # stages run in-process: nothing to warm
    outside_dvc.write_text(params.read_text())
    assert isinstance(runner.warm_stage_processes(outside_dvc, STAGES), contextlib.nullcontext)
