"""The team stack asks who you are, and survives its tracking server going away (issue #31), tested
without a container engine.

Prefect's server runs with ``PREFECT_SERVER_API_AUTH_STRING`` and MLflow's through
``infra/mlflow/start-server.sh`` (its basic-auth app), the way ``infra/compose.yaml`` starts
them, as local processes; ``infra/mlflow/create_users.py`` makes the pipeline and reader
accounts as compose's ``mlflow-users`` job does. Then:

- a request without credentials, or with wrong ones, is refused (401) by both servers, while
  their health endpoints stay open for probes;
- ``inspectops pipeline run --until register_segment`` with the pipeline account's credentials,
  while the tracking server is stopped during training, fails within its retry window with a
  message naming the server and keeps what earlier stages wrote; once the server is back, the same
  command registers the segmentation model (one version) and moves ``champion`` to it;
- the reader account can read that version but cannot move the alias (403);
- no secret of the stack lands in the project's outputs, the MLflow store (params, tags,
  artifacts), Prefect's database or either server's log.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from tests.conftest import REPO_ROOT, write_params
from tests.integration.conftest import TINY_SEGMENT
from tests.processes import free_port, stop_process_group, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.integration]

START_MLFLOW = REPO_ROOT / "infra" / "mlflow" / "start-server.sh"
CREATE_USERS = REPO_ROOT / "infra" / "mlflow" / "create_users.py"

# This test's own secrets (MLflow wants passwords of 12 characters or more).
PREFECT_AUTH = "inspectops:prefect-auth-test-5e1f0c"
ADMIN = ("admin", "admin-test-pw-4f2a91")
PIPELINE = ("pipeline", "pipeline-test-pw-7b3e55")
READER = ("reader", "reader-test-pw-0c8d13")
SECRETS = (PREFECT_AUTH, ADMIN[1], PIPELINE[1], READER[1])


def _without_stack_settings() -> dict[str, str]:
    """This environment minus any MLflow or Prefect setting, so only what a test sets reaches a process."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}


@dataclass(frozen=True)
class Stack:
    root: Path
    prefect_api: str
    mlflow_url: str
    start_mlflow: Callable[[], None]
    stop_mlflow: Callable[[], None]

    def client_env(self, account: tuple[str, str] = PIPELINE) -> dict[str, str]:
        """What a worker or a laptop sets to talk to the stack."""
        return {
            **_without_stack_settings(),
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_API_AUTH_STRING": PREFECT_AUTH,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": account[0],
            "MLFLOW_TRACKING_PASSWORD": account[1],
        }


def _status(url: str, data: bytes | None = None, auth: tuple[str, str] | str | None = None) -> int:
    """The HTTP status of a GET (or a JSON POST with ``data``), with basic auth when given."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        text = auth if isinstance(auth, str) else f"{auth[0]}:{auth[1]}"
        headers["Authorization"] = "Basic " + base64.b64encode(text.encode()).decode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    base = _without_stack_settings()
    prefect_port, mlflow_port = free_port(), free_port()
    prefect_env = {
        **base,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    prefect = _start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
        prefect_env,
        root / "prefect.log",
    )
    mlflow_env = {
        **base,
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root / 'basic_auth.db'}",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-csrf-key",
        "TMPDIR": str(root),
        "PYTHON": sys.executable,
    }
    server_args = ["--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1", "--serve-artifacts"]
    store_args = ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    store_args += ["--artifacts-destination", str(root / "artifacts")]
    servers: list[subprocess.Popen] = []

    def start_mlflow() -> None:
        """Start (or start again, on the same port and stores) the tracking server, and wait until it answers."""
        log = root / f"mlflow-{len(servers)}.log"
        servers.append(_start(["sh", str(START_MLFLOW), *server_args, *store_args], mlflow_env, log))
        wait_until_healthy(f"http://127.0.0.1:{mlflow_port}/health", servers[-1], log, timeout=180)

    stack = Stack(
        root,
        f"http://127.0.0.1:{prefect_port}/api",
        f"http://127.0.0.1:{mlflow_port}",
        start_mlflow=start_mlflow,
        stop_mlflow=lambda: stop_process_group(servers[-1]),
    )
    try:
        wait_until_healthy(f"{stack.prefect_api}/health", prefect, root / "prefect.log", timeout=180)
        start_mlflow()
        accounts = {
            **base,
            "MLFLOW_TRACKING_URI": stack.mlflow_url,
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
            "MLFLOW_PIPELINE_USERNAME": PIPELINE[0],
            "MLFLOW_PIPELINE_PASSWORD": PIPELINE[1],
            "MLFLOW_READER_USERNAME": READER[0],
            "MLFLOW_READER_PASSWORD": READER[1],
        }
        made = subprocess.run(
            [sys.executable, str(CREATE_USERS)], env=accounts, capture_output=True, text=True, timeout=120
        )
        assert made.returncode == 0, made.stdout + made.stderr
        assert "pipeline account pipeline: created" in made.stdout and "reader account reader: created" in made.stdout
        assert not any(secret in made.stdout + made.stderr for secret in SECRETS)
        yield stack
    finally:
        stop_process_group(prefect)
        for server in servers:
            stop_process_group(server)


def test_both_servers_refuse_requests_without_credentials(stack: Stack) -> None:
    flows = f"{stack.prefect_api}/flows/filter"
    assert _status(flows, b"{}") == 401
    assert _status(flows, b"{}", auth="inspectops:wrong") == 401
    assert _status(flows, b"{}", auth=PREFECT_AUTH) == 200
    assert _status(f"{stack.prefect_api}/health") == 200  # probes need no credentials

    experiments = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(experiments) == 401
    assert _status(experiments, auth=(READER[0], "not-the-password")) == 401
    assert _status(experiments, auth=READER) == 200
    assert _status(f"{stack.mlflow_url}/health") == 200


def _stop_mlflow_once_training_starts(stack: Stack, first: subprocess.Popen, marker: Path) -> None:
    """The fault: the tracking server goes away while the segmentation model trains (``marker``: the
    record a training writes as it starts)."""
    deadline = time.monotonic() + 600
    while not marker.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.is_file(), "training never started:\n" + first.communicate()[0][-4000:]
    stack.stop_mlflow()


def test_the_pipeline_account_registers_once_through_a_server_outage_and_a_reader_cannot_move_the_champion(
    stack: Stack, tmp_path: Path
) -> None:
    tracking = {"tracking_uri": stack.mlflow_url, "experiment": "tests", "http_retries": 2, "http_backoff_seconds": 1}
    params_path = write_params(tmp_path, segment=TINY_SEGMENT, tracking=tracking, pipeline={"families": ["segment"]})
    command = [sys.executable, "-m", "components.cli", "pipeline", "run", "--params", str(params_path)]
    command += ["--until", "register_segment"]
    artifacts = tmp_path / "artifacts"

    # The tracking server stops mid-run: the run fails within the retry window, naming the server,
    # and what it wrote stays.
    first = subprocess.Popen(
        command,
        env=stack.client_env(PIPELINE),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _stop_mlflow_once_training_starts(stack, first, artifacts / "models" / ".segment.partial.json")
    stopped = time.monotonic()
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 1, output[-4000:]
    assert time.monotonic() - stopped < 60  # 2 retries of at most 2 s, not MLflow's default four minutes a call
    assert f"the MLflow tracking server at {stack.mlflow_url} did not answer" in output, output[-4000:]
    assert (artifacts / "metrics" / "validation.json").is_file()  # earlier stages' outputs stay
    assert (artifacts / "datasets" / "segment" / "list" / "train.txt").is_file()
    assert not (artifacts / "models" / "segment").exists()  # nothing half-trained is published

    # The server is back: a rerun completes and registers the model once.
    stack.start_mlflow()
    run = subprocess.run(
        command, env=stack.client_env(PIPELINE), cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    from components.config import load_params

    model = load_params(params_path).tracking.registered_model
    os.environ.update({"MLFLOW_TRACKING_USERNAME": READER[0], "MLFLOW_TRACKING_PASSWORD": READER[1]})
    try:
        reader = mlflow.MlflowClient(tracking_uri=stack.mlflow_url)
        champion = reader.get_model_version_by_alias(model, "champion")  # READ on everything
        assert champion.version == "1" and champion.source.endswith("deployable")
        assert [v.version for v in reader.search_model_versions(f"name='{model}'")] == ["1"]  # registered once
        with pytest.raises(MlflowException, match=r"403|PERMISSION_DENIED|Permission denied"):
            reader.set_registered_model_alias(model, "champion", champion.version)
        with pytest.raises(MlflowException, match=r"403|PERMISSION_DENIED|Permission denied"):
            reader.delete_registered_model_alias(model, "champion")
        os.environ.update({"MLFLOW_TRACKING_USERNAME": PIPELINE[0], "MLFLOW_TRACKING_PASSWORD": PIPELINE[1]})
        owner = mlflow.MlflowClient(tracking_uri=stack.mlflow_url)
        owner.set_registered_model_alias(model, "champion", champion.version)  # the owner may
        runs = owner.search_runs([owner.get_experiment_by_name("tests").experiment_id])
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)

    # The stack's secrets are nowhere in what the run left behind: the project's outputs, the
    # logged params and tags, the artifact store, Prefect's database and both servers' logs.
    logged = json.dumps([{"params": r.data.params, "tags": r.data.tags} for r in runs])
    assert runs and not any(secret in logged for secret in SECRETS)
    leaks = []
    for folder in (tmp_path, stack.root):
        for path in folder.rglob("*"):
            if path.is_file() and path.name != "basic_auth.db":  # MLflow keeps password hashes there
                data = path.read_bytes()
                leaks += [f"{path}: {s[:6]}..." for s in SECRETS if s.encode() in data]
    assert not leaks, leaks
    assert not any(secret in output + run.stdout + run.stderr for secret in SECRETS)
