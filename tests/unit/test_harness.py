"""The harness reports trtexec's statistics exactly, and the runtimes and CLI entry point use it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch

from components.benchmarking.bench import BenchmarkSetupError, parse_batch_sizes, results_path, run_benchmark
from components.benchmarking.harness import BenchmarkError, benchmark, latency_stats, median, percentile
from components.benchmarking.runtimes import ModelLoadError, RuntimeUnavailable, load_runtime
from components.config import parse_params
from tests.benchmark_models import write_tiny_change_onnx
from tests.conftest import tiny_params_dict

# ---------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (list(range(1, 11)), {"median": 5.5, "p90": 9, "p95": 10, "p99": 10}),
        (list(range(1, 21)), {"median": 10.5, "p90": 18, "p95": 19, "p99": 20}),
        (list(range(1, 101)), {"median": 50.5, "p90": 90, "p95": 95, "p99": 99}),
        ([7.0], {"median": 7.0, "p90": 7.0, "p95": 7.0, "p99": 7.0}),
        ([4.0, 1.0, 3.0], {"median": 3.0, "p90": 4.0, "p95": 4.0, "p99": 4.0}),
    ],
)
def test_percentiles_follow_trtexec(values: list[float], expected: dict[str, float]) -> None:
    stats = latency_stats(values)
    assert stats.median_ms == expected["median"]
    assert stats.p90_ms == expected["p90"]
    assert stats.p95_ms == expected["p95"]
    assert stats.p99_ms == expected["p99"]
    assert stats.min_ms == min(values)
    assert stats.max_ms == max(values)
    assert stats.mean_ms == pytest.approx(sum(values) / len(values))


def test_percentile_count_is_exact_not_binary_float() -> None:
    # (1 - 0.9) * 10 is 0.9999999999999998 in doubles: a naive version would return the max.
    assert percentile(list(range(1, 11)), 90) == 9
    assert median([1.0, 2.0]) == 1.5
    with pytest.raises(BenchmarkError, match=r"\[0, 100\]"):
        percentile([1.0], 101)
    with pytest.raises(BenchmarkError, match="no timed iterations"):
        latency_stats([])


# ---------------------------------------------------------------------------- timing loop


class FakeClock:
    """Time moves only when the fake workload runs: each call takes the next duration."""

    def __init__(self, durations: Iterator[float]) -> None:
        self.now = 0.0
        self.durations = durations
        self.calls: list[int] = []

    def __call__(self) -> float:
        return self.now

    def run_batch(self, batch: int) -> None:
        self.calls.append(batch)
        self.now += next(self.durations)


def test_benchmark_on_a_known_workload_gives_exact_numbers() -> None:
    # Binary-exact durations: two warm-up calls of 0.5 s, then 0.125, 0.25, 0.5, 0.125 s (1.0 s in total).
    clock = FakeClock(iter([0.5, 0.5, 0.125, 0.25, 0.5, 0.125, 99.0]))
    result = benchmark(clock.run_batch, 8, warmup_seconds=1.0, duration_seconds=1.0, min_iterations=2, clock=clock)
    assert result.warmup_iterations == 2
    assert result.iterations == 4
    assert result.total_seconds == 1.0
    assert result.qps == 4.0
    assert result.pairs_per_second == 32.0
    assert clock.calls == [8] * 6
    lat = result.latency
    assert (lat.min_ms, lat.max_ms, lat.mean_ms, lat.median_ms) == (125.0, 500.0, 250.0, 187.5)
    assert (lat.p90_ms, lat.p95_ms, lat.p99_ms) == (500.0, 500.0, 500.0)
    record = result.to_dict()
    assert record["pairs_per_second"] == 32.0
    assert record["latency_median_ms"] == 187.5
    assert record["warmup_seconds"] == 1.0 and record["duration_seconds"] == 1.0


def test_min_iterations_win_over_a_short_duration_and_warmup_can_be_off() -> None:
    clock = FakeClock(iter([0.25] * 10))
    result = benchmark(clock.run_batch, 1, warmup_seconds=0.0, duration_seconds=0.5, min_iterations=5, clock=clock)
    assert result.warmup_iterations == 0
    assert result.iterations == 5
    assert result.qps == 4.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"duration_seconds": 0.0}, "duration_seconds"),
        ({"warmup_seconds": -1.0}, "warmup_seconds"),
        ({"min_iterations": 0}, "min_iterations"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    settings = {"batch_size": 1, "warmup_seconds": 0.0, "duration_seconds": 1.0, "min_iterations": 1, **kwargs}
    with pytest.raises(BenchmarkError, match=match):
        benchmark(lambda batch: None, **settings)


def test_real_clock_measures_a_sleeping_workload() -> None:
    result = benchmark(lambda batch: time.sleep(0.002), 4, 0.0, 0.03, 3)
    assert result.iterations >= 3
    assert 2.0 <= result.latency.median_ms < 100.0
    assert result.pairs_per_second == pytest.approx(4 * result.iterations / result.total_seconds)


# ---------------------------------------------------------------------------- runtimes


def test_onnxruntime_reads_inputs_and_size_from_the_model(tmp_path: Path) -> None:
    onnx_path = write_tiny_change_onnx(tmp_path / "model.onnx", image_size=32)
    loaded = load_runtime("onnxruntime", onnx_path, image_size=256, threads=1)
    assert loaded.image_size == 32  # the model's static size wins over params
    loaded.run_batch(1)
    loaded.run_batch(3)  # dynamic batch


def test_onnxruntime_feeds_any_two_input_model_at_its_declared_shapes(tmp_path: Path) -> None:
    """The classifier's inputs are named input_1/input_2 and stack four lights (N, 3, 4H, W)."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 3, 4 * 16, 16]
    graph = helper.make_graph(
        [helper.make_node("Sub", ["input_1", "input_2"], ["output"])],
        "pair",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("input_1", "input_2")],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    path = tmp_path / "pair.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    loaded = load_runtime("onnxruntime", path, image_size=256, threads=1)
    loaded.run_batch(2)


def test_onnxruntime_refuses_a_model_without_two_inputs(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["crop"], ["mask"])],
        "one",
        [helper.make_tensor_value_info("crop", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 3, 8, 8])],
    )
    path = tmp_path / "one.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    with pytest.raises(ModelLoadError, match=r"2 inputs, got \['crop'\]"):
        load_runtime("onnxruntime", path, image_size=64)


class _PairModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        return self.conv(test - golden)


def test_pytorch_runs_a_saved_module_and_refuses_a_state_dict(tmp_path: Path) -> None:
    module_path = tmp_path / "model.pt"
    torch.save(_PairModel(), module_path)
    loaded = load_runtime("pytorch", module_path, image_size=32, threads=1)
    loaded.run_batch(2)
    weights_path = tmp_path / "weights.pt"
    torch.save(_PairModel().state_dict(), weights_path)
    with pytest.raises(ModelLoadError, match="not a module"):
        load_runtime("pytorch", weights_path, image_size=32)


def test_unknown_runtime_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown runtime"):
        load_runtime("openvino", tmp_path / "x.onnx", 64)
    with pytest.raises(ModelLoadError, match="not found"):
        load_runtime("onnxruntime", tmp_path / "x.onnx", 64)


def test_tensorrt_runtime_says_it_is_unavailable(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is importable here; this test covers machines without it")
    except ImportError:
        pass
    engine = tmp_path / "engine.plan"
    engine.write_bytes(b"not an engine")
    with pytest.raises(RuntimeUnavailable, match="TensorRT is not available"):
        load_runtime("tensorrt", engine, 64)


# ---------------------------------------------------------------------------- CLI entry point


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes("1,8, 16,32") == (1, 8, 16, 32)
    with pytest.raises(BenchmarkSetupError, match="comma-separated"):
        parse_batch_sizes("1,x")
    with pytest.raises(BenchmarkSetupError, match=">= 1"):
        parse_batch_sizes("0")


def test_run_benchmark_writes_json_and_logs_mlflow(tmp_path: Path) -> None:
    raw = tiny_params_dict(tmp_path, benchmark={"warmup_seconds": 0.02, "duration_seconds": 0.05, "threads": 1})
    params = parse_params(raw)
    onnx_path = write_tiny_change_onnx(tmp_path / "model.onnx")
    records = run_benchmark(params, onnx_path, "onnxruntime", batch_sizes=(1, 2), model_version="3")
    assert [r["batch_size"] for r in records] == [1, 2]
    assert all(r["pairs_per_second"] > 0 and r["platform"] == "cpu" for r in records)

    path = results_path(params, "cpu", "onnxruntime", "fp32")
    assert path == tmp_path / "artifacts" / "reports" / "benchmarks" / "cpu-onnxruntime-fp32.json"
    saved = json.loads(path.read_text())
    assert saved["model_version"] == "3" and len(saved["results"]) == 2

    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    (run,) = mlflow.search_runs([experiment.experiment_id], output_format="list")
    tags = run.data.tags
    assert (tags["platform"], tags["runtime"], tags["precision"]) == ("cpu", "onnxruntime", "fp32")
    assert (tags["batch_sizes"], tags["model_version"], tags["kind"]) == ("1,2", "3", "benchmark")
    assert run.data.metrics["bench/b2/pairs_per_second"] == pytest.approx(records[1]["pairs_per_second"])
    assert "bench/b1/latency_p99_ms" in run.data.metrics


def test_run_benchmark_refuses_unknown_runtime(tmp_path: Path) -> None:
    params = parse_params(tiny_params_dict(tmp_path))
    with pytest.raises(BenchmarkSetupError, match="unknown runtime"):
        run_benchmark(params, tmp_path / "m.onnx", "tvm")


def test_a_tensorrt_platform_without_tensorrt_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from components.benchmarking import trtexec as tx
    from components.benchmarking.bench import benchmark_platform

    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is importable here; this test covers machines without it")
    except ImportError:
        pass
    monkeypatch.delenv("TRTEXEC", raising=False)
    monkeypatch.setattr(tx, "JETSON_TRTEXEC", tmp_path / "no-trtexec")
    monkeypatch.setattr(tx.shutil, "which", lambda name: None)
    params = parse_params(tiny_params_dict(tmp_path))
    onnx_path = write_tiny_change_onnx(tmp_path / "model.onnx")
    with pytest.raises(RuntimeUnavailable, match=r"(?s)TensorRT is not available.*trtexec not found \(looked in"):
        benchmark_platform(params, "t4", str(onnx_path))
    assert not list((tmp_path / "artifacts" / "reports" / "benchmarks").glob("*.json"))
    assert not (tmp_path / "mlflow.db").exists()
