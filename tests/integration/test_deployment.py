"""`prefect deployment run 'inspectops-pipeline/local'` for real: a temporary Prefect server,
the project's prefect.yaml deployed to it, a process worker, and a run waited on to completion."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, TINY_SYNTHETIC

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Prefect server at {url} did not become healthy in {timeout} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A clone of the committed repository with tiny data, as a worker machine would have it."""
    root = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(root)], check=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["synthetic"].update(TINY_SYNTHETIC)
    params["data"]["image_size"] = 64
    params["tracking"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "tiny"], cwd=root, check=True)
    return root


@pytest.fixture
def server_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    server = subprocess.Popen(
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_healthy(env["PREFECT_API_URL"])
        yield env
    finally:
        _stop(server)


def _prefect(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        ["prefect", "--no-prompt", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def test_deployment_run_completes_through_a_process_worker(
    checkout: Path, server_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**server_env, "INSPECTOPS_WORKDIR": str(checkout)}
    _prefect(["work-pool", "create", "cpu-local", "--type", "process"], env, checkout)
    _prefect(["deploy", "--name", "local"], env, checkout)
    worker = subprocess.Popen(
        ["prefect", "worker", "start", "--pool", "cpu-local", "--limit", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        output = _prefect(
            [
                "deployment",
                "run",
                "inspectops-pipeline/local",
                "--param",
                "until=validate",
                "--watch",
                "--watch-timeout",
                "600",
            ],
            env,
            checkout,
            timeout=660,
        )
    finally:
        _stop(worker)
    assert "Completed" in output
    # The run really happened in the worker's checkout, through DVC.
    assert (checkout / "artifacts" / "datasets" / "segment" / "list" / "val.txt").is_file()
    assert (checkout / "dvc.lock").is_file()
