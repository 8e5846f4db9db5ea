"""`prefect deployment run 'inspectops-pipeline/local'` for real: a temporary Prefect server,
the project's prefect.yaml deployed to it, a process worker, and a run waited on to completion.

The deployment is registered with INSPECTOPS_WORKDIR naming one checkout and the worker runs
with it naming another: the run must happen in the worker's checkout (issue #8)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, TINY_SYNTHETIC
from tests.processes import free_port, stop_process_group, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.integration]


# Files of this working tree that a clone must carry even before they are committed: `git
# clone` copies the committed HEAD, but the run must exercise the prefect.yaml (and its pull
# step) being tested. They are copied into the clone and committed there with the tiny params.
# The worker imports the pull step from the installed package (an editable install of this
# tree, like `components`), so the copy of worker_checkout.py only keeps the clone whole.
WORKING_TREE_FILES = ("prefect.yaml", "components/pipeline/worker_checkout.py")


def _clone(tmp_path: Path, name: str) -> Path:
    """A clone of the repository with tiny data, as a machine would have it."""
    root = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(root)], check=True)
    for relative in WORKING_TREE_FILES:
        shutil.copyfile(REPO_ROOT / relative, root / relative)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["synthetic"].update(TINY_SYNTHETIC)
    params["data"]["image_size"] = 64
    params["tracking"]["tracking_uri"] = f"sqlite:///{tmp_path / f'mlflow-{name}.db'}"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny"], cwd=root, check=True)
    return root


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The worker machine's checkout: INSPECTOPS_WORKDIR in the worker's environment."""
    return _clone(tmp_path, "checkout")


@pytest.fixture
def deployer_checkout(tmp_path: Path) -> Path:
    """The checkout `prefect deploy` runs from, with INSPECTOPS_WORKDIR naming it there."""
    return _clone(tmp_path, "deployer-checkout")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def server_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
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
        wait_until_healthy(f"{env['PREFECT_API_URL']}/health")
        yield env
    finally:
        stop_process_group(server)


def _run_prefect(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["prefect", "--no-prompt", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _prefect(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    done = _run_prefect(args, env, cwd, timeout)
    return done.stdout + done.stderr


def test_deployment_runs_in_the_workers_checkout_not_the_deployers(
    checkout: Path, deployer_checkout: Path, server_env: dict[str, str], tmp_path: Path
) -> None:
    # Registered with one value of INSPECTOPS_WORKDIR ...
    deploy_env = {**server_env, "INSPECTOPS_WORKDIR": str(deployer_checkout)}
    _prefect(["work-pool", "create", "cpu-local", "--type", "process"], deploy_env, deployer_checkout)
    _prefect(["deploy", "--name", "local"], deploy_env, deployer_checkout)

    # The stored pull steps are prefect.yaml's as written: nothing of the deployer's
    # environment was filled in (a `{{ $INSPECTOPS_WORKDIR }}` placeholder would have been).
    inspected = _run_prefect(
        ["deployment", "inspect", "inspectops-pipeline/local", "--output", "json"], deploy_env, deployer_checkout
    )
    pull_steps = json.loads(inspected.stdout)["pull_steps"]
    assert pull_steps == yaml.safe_load((deployer_checkout / "prefect.yaml").read_text())["pull"]
    assert str(deployer_checkout) not in json.dumps(pull_steps)

    # ... run by a worker with another.
    worker_env = {**server_env, "INSPECTOPS_WORKDIR": str(checkout)}
    worker = subprocess.Popen(
        ["prefect", "worker", "start", "--pool", "cpu-local", "--limit", "1"],
        env=worker_env,
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
            deploy_env,
            deployer_checkout,
            timeout=660,
        )
    finally:
        stop_process_group(worker)
    assert "Completed" in output
    # The run really happened in the worker's checkout, through DVC (which rewrote, and
    # staged, dvc.lock for the tiny params) ...
    assert (checkout / "artifacts" / "datasets" / "segment" / "list" / "val.txt").is_file()
    assert "dvc.lock" in _git(checkout, "diff", "--name-only", "HEAD").split()
    # ... and not in the deployer's, which nothing touched.
    assert not (deployer_checkout / "artifacts" / "datasets").exists()  # (artifacts/metrics is in git)
    assert _git(deployer_checkout, "status", "--porcelain", "--untracked-files=all") == ""
