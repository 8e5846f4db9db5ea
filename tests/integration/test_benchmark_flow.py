"""The benchmark fan-out against real served deployments: cpu measures, t4 fails for lack of TensorRT.

The per-platform deployments are served for real by ``python -m flows.benchmark serve``
in a subprocess pointed at the session's test server (one process serves every platform,
as a worker per work pool would on real hardware); ``run_deployment`` in the parent flow
then goes through the API exactly as in production. The subprocess is stopped with
SIGTERM (Prefect's runner shuts down on it) and killed only if it does not exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from components.benchmarking.deployments import platform_deployment_specs, register_deployments
from components.benchmarking.platforms import load_platforms
from components.config import load_params
from flows.benchmark import COMPARISON_ARTIFACT_KEY, benchmark_fanout_flow, benchmark_platform_flow
from tests.benchmark_models import write_tiny_change_onnx
from tests.conftest import REPO_ROOT, write_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SERVED = ("cpu", "t4")


def _deployments_ready(names: tuple[str, ...]) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            for name in names:
                client.read_deployment_by_name(f"benchmark-platform/{name}")
        except ObjectNotFound:
            return False
    return True


@pytest.fixture
def served_platforms(prefect_server: None, tmp_path: Path) -> Iterator[Path]:
    """Serve ``benchmark-platform/cpu`` and ``/t4`` from a subprocess; yields its log file."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("TRTEXEC", None)  # t4 must find neither trtexec nor TensorRT
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.benchmark", "serve", "--platforms", *SERVED],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while not _deployments_ready(SERVED):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serving the benchmark deployments failed:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_fanout_measures_cpu_and_reports_t4_failure(served_platforms: Path, tmp_path: Path) -> None:
    bench = {
        "platforms": list(SERVED),
        "batch_sizes": [1, 2],
        "warmup_seconds": 0.1,
        "duration_seconds": 0.3,
        "min_iterations": 3,
        "threads": 1,
    }
    params_path = write_params(tmp_path, benchmark=bench)
    onnx_path = write_tiny_change_onnx(tmp_path / "export" / "model.onnx", image_size=64)

    summary = benchmark_fanout_flow(
        params_path=str(params_path),
        model_uri=str(onnx_path),
        model_version="1",
        timeout_seconds=100,
        poll_interval_seconds=1,
    )

    assert summary["failed"] == ["t4"], served_platforms.read_text()[-3000:]
    rows = {(row["platform"], row["batch_size"]): row for row in summary["rows"]}
    for batch in (1, 2):
        cpu = rows[("cpu", batch)]
        assert cpu["status"] == "ok" and cpu["measured_fps"] > 0
    t4 = rows[("t4", 16)]
    assert (t4["status"], t4["measured_fps"], t4["reference_fps"]) == ("failed", None, 59.7)
    assert "TensorRT is not available on this machine" in t4["message"]
    assert "trtexec not found" in t4["message"]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[COMPARISON_ARTIFACT_KEY]))
        )
    assert artifacts and artifacts[-1].type == "table"
    assert "TensorRT is not available" in str(artifacts[-1].data)

    params = load_params(params_path)
    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    by_kind = {run.data.tags.get("kind"): run for run in runs}
    comparison = by_kind["benchmark-comparison"]
    assert comparison.info.run_id == summary["mlflow_run_id"]
    table = mlflow.load_table("benchmark_comparison.json", run_ids=[comparison.info.run_id])
    assert set(table["platform"]) == {"cpu", "t4"}
    assert table.loc[table["platform"] == "t4", "status"].tolist() == ["failed"]
    assert comparison.data.metrics["compare/platforms_failed"] == 1.0
    cpu_run = by_kind["benchmark"]
    assert cpu_run.data.tags["fanout_id"] == summary["fanout_id"]
    assert cpu_run.data.tags["platform"] == "cpu" and cpu_run.data.metrics["bench/b2/pairs_per_second"] > 0


def test_register_binds_each_platform_to_its_work_pool(prefect_server: None) -> None:
    from prefect.client.orchestration import get_client

    specs = platform_deployment_specs(load_platforms(), ["jetson-orin-nano", "h100"])
    ids = register_deployments(benchmark_platform_flow, specs)
    assert set(ids) == {"benchmark-platform/jetson-orin-nano", "benchmark-platform/h100"}
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("benchmark-platform/h100")
        assert deployment.work_pool_name == "gpu-h100"
        assert deployment.entrypoint == "flows.benchmark.benchmark_platform_flow"
        assert deployment.parameters == {"params_path": "params.yaml", "platform": "h100"}
        assert client.read_work_pool("jetson-orin-nano").type == "process"
