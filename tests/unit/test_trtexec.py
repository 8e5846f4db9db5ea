"""trtexec discovery, command lines for TensorRT 10 and 11, log and --exportTimes parsing, engine-build decisions.

The fixtures in tests/data/trtexec/ follow trtexec's printed format (sampleReporting.cpp):
``[date-time] [I]`` prefixes, 6-significant-digit numbers, the summary computed from the
per-iteration records of the matching ``*_times.json``.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from components.benchmarking import trtexec as tx
from components.benchmarking.tensorrt_build import (
    EngineBuildError,
    detect_onnx_precision,
    onnx_image_size,
    plan_build,
    profile_shapes,
    trt_major_version,
)
from tests.benchmark_models import write_tiny_change_onnx

DATA = Path(__file__).resolve().parents[1] / "data" / "trtexec"
TRT10_LOG = DATA / "trt10_t4_b16.log"
TRT10_TIMES = DATA / "trt10_t4_b16_times.json"
TRT11_LOG = DATA / "trt11_l4_b8.log"
TRT11_TIMES = DATA / "trt11_l4_b8_times.json"


# ---------------------------------------------------------------------------- version


@pytest.mark.parametrize(
    ("code", "version"),
    [
        ("100300", (10, 3, 0)),
        ("101303", (10, 13, 3)),
        ("100001", (10, 0, 1)),
        ("110100", (11, 1, 0)),
        ("8601", (8, 6, 1)),
    ],
)
def test_version_codes(code: str, version: tuple[int, int, int]) -> None:
    assert tx.parse_version_code(code) == version


def test_version_from_banner_or_version_line() -> None:
    assert tx.parse_trtexec_version(TRT10_LOG.read_text()) == (10, 3, 0)
    assert tx.parse_trtexec_version(TRT11_LOG.read_text()) == (11, 1, 0)
    assert tx.parse_trtexec_version("[01/01/2026-00:00:00] [I] TensorRT version: 10.16.2") == (10, 16, 2)
    assert str(tx.TrtVersion(11, 1, 0)) == "11.1.0"
    with pytest.raises(tx.TrtexecParseError, match="no TensorRT version"):
        tx.parse_trtexec_version("usage: trtexec [options]")


# ---------------------------------------------------------------------------- discovery


def _fake_exe(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_prefers_env_then_path_then_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tx, "JETSON_TRTEXEC", tmp_path / "jetson" / "trtexec")
    exe = _fake_exe(tmp_path / "trtexec", "")
    assert tx.find_trtexec(env={"TRTEXEC": str(exe)}, which=lambda name: "/usr/bin/trtexec") == exe
    assert tx.find_trtexec(env={}, which=lambda name: "/usr/bin/trtexec") == Path("/usr/bin/trtexec")
    assert tx.find_trtexec(hint=exe, env={}, which=lambda name: None) == exe


def test_not_found_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jetson = tmp_path / "usr/src/tensorrt/bin/trtexec"
    monkeypatch.setattr(tx, "JETSON_TRTEXEC", jetson)
    with pytest.raises(tx.TrtexecNotFound) as caught:
        tx.find_trtexec(hint=tmp_path / "hint", env={"TRTEXEC": str(tmp_path / "nope")}, which=lambda name: None)
    message = str(caught.value)
    assert message.startswith("trtexec not found (looked in ")
    for place in ("$TRTEXEC=", "PATH", str(tmp_path / "hint"), str(jetson)):
        assert place in message


# ---------------------------------------------------------------------------- command


def _settings(**overrides: object) -> tx.TrtexecSettings:
    base = {
        "onnx": Path("m.onnx"),
        "engine": Path("e.plan"),
        "batch_size": 16,
        "max_batch_size": 32,
        "image_size": 256,
        "precision": "fp16",
        "warmup_seconds": 1.0,
        "duration_seconds": 3.0,
        "export_times": Path("times.json"),
        "timing_cache": Path("timing.cache"),
    }
    return tx.TrtexecSettings(**{**base, **overrides})  # type: ignore[arg-type]


def test_trt10_command_sets_precision_and_comparable_inference_flags() -> None:
    command = tx.build_command("trtexec", tx.TrtVersion(10, 3, 0), _settings())
    assert command[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=e.plan"]
    assert "--minShapes=input0:1x3x256x256,input1:1x3x256x256" in command
    assert "--optShapes=input0:16x3x256x256,input1:16x3x256x256" in command
    assert "--maxShapes=input0:32x3x256x256,input1:32x3x256x256" in command
    assert "--shapes=input0:16x3x256x256,input1:16x3x256x256" in command
    for flag in ("--fp16", "--noDataTransfers", "--useCudaGraph", "--separateProfileRun"):
        assert flag in command
    assert "--warmUp=1000" in command and "--duration=3" in command
    assert "--exportTimes=times.json" in command and "--timingCacheFile=timing.cache" in command


def test_trt11_command_has_no_precision_or_transfer_flags() -> None:
    command = tx.build_command("trtexec", tx.TrtVersion(11, 1, 0), _settings(precision="int8", warmup_seconds=0.5))
    banned = {"--fp16", "--int8", "--best", "--noDataTransfers", "--useCudaGraph", "--separateProfileRun"}
    assert not banned & set(command)
    assert "--warmUp=500" in command


@pytest.mark.parametrize(("precision", "flags"), [("fp32", ()), ("int8", ("--int8",)), ("best", ("--best",))])
def test_trt10_precision_flags(precision: str, flags: tuple[str, ...]) -> None:
    assert tx.precision_flags(tx.TrtVersion(10, 8, 0), precision) == flags


def test_command_errors() -> None:
    with pytest.raises(tx.TrtexecError, match="not supported"):
        tx.build_command("trtexec", tx.TrtVersion(8, 6, 1), _settings())
    with pytest.raises(tx.TrtexecError, match="unknown precision"):
        tx.build_command("trtexec", tx.TrtVersion(10, 3, 0), _settings(precision="fp4x"))
    with pytest.raises(tx.TrtexecError, match="outside"):
        tx.build_command("trtexec", tx.TrtVersion(10, 3, 0), _settings(batch_size=64))


# ---------------------------------------------------------------------------- parsing


def test_trt10_summary() -> None:
    summary = tx.parse_summary(TRT10_LOG.read_text())
    assert summary.throughput_qps == 3.73171
    assert summary.total_host_walltime_s == 3.21568
    assert summary.total_gpu_compute_s == 3.21554
    assert summary.queries == 12 and summary.warmup_queries == 4
    assert summary.version == (10, 3, 0)
    latency = summary.latency
    assert (latency.min, latency.max, latency.mean, latency.median) == (267.32, 270.0, 267.964, 267.805)
    assert latency.percentiles == {90.0: 268.38, 95.0: 270.0, 99.0: 270.0}
    assert set(summary.timings) == {"Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency"}
    assert summary.timings["H2D Latency"].max == 0.0  # --noDataTransfers

    record = tx.summary_record(summary, batch_size=16)
    assert record["pairs_per_second"] == pytest.approx(59.707, abs=1e-3)  # the T4 reference is 59.7
    assert record["latency_p99_ms"] == 270.0
    assert record["gpu_compute_median_ms"] == 267.805
    assert record["tensorrt_version"] == "10.3.0"


def test_trt11_summary() -> None:
    summary = tx.parse_summary(TRT11_LOG.read_text())
    assert summary.version == (11, 1, 0)
    assert summary.queries == 20
    assert summary.latency.percentile(95) == 61.05
    with pytest.raises(tx.TrtexecParseError, match="percentile 50"):
        summary.latency.percentile(50)
    assert tx.summary_record(summary, 8)["pairs_per_second"] == pytest.approx(8 * 16.4156)


@pytest.mark.parametrize(("log", "times", "batch"), [(TRT10_LOG, TRT10_TIMES, 16), (TRT11_LOG, TRT11_TIMES, 8)])
def test_export_times_agree_with_the_summary(log: Path, times: Path, batch: int) -> None:
    summary = tx.parse_summary(log.read_text())
    records = tx.parse_export_times(times)
    assert len(records) == summary.queries
    assert records[0].latency_ms == pytest.approx(records[0].h2d_ms + records[0].compute_ms + records[0].d2h_ms)
    assert records[0].enqueue_ms == pytest.approx(records[0].end_enq_ms - records[0].start_enq_ms)
    result = tx.summarize_export_times(records, batch)
    assert result.qps == pytest.approx(summary.throughput_qps, rel=1e-5)
    assert result.total_seconds == pytest.approx(summary.total_host_walltime_s, rel=1e-5)
    assert result.latency.median_ms == pytest.approx(summary.latency.median, rel=1e-5)
    assert result.latency.p90_ms == pytest.approx(summary.latency.percentile(90), rel=1e-5)
    assert result.latency.p99_ms == pytest.approx(summary.latency.percentile(99), rel=1e-5)
    assert result.latency.mean_ms == pytest.approx(summary.latency.mean, rel=1e-5)


def test_parse_errors_are_clear() -> None:
    with pytest.raises(tx.TrtexecParseError, match="no '=== Performance summary ==='"):
        tx.parse_summary("[09/14/2025-08:12:05] [I] Starting inference\n")
    with pytest.raises(tx.TrtexecParseError, match="incomplete performance summary"):
        tx.parse_summary("=== Performance summary ===\nThroughput: 3 qps\n")
    with pytest.raises(tx.TrtexecParseError, match="lacks"):
        tx.parse_summary("=== Performance summary ===\nLatency: min = 1 ms, max = 2 ms\n")
    with pytest.raises(tx.TrtexecParseError, match="not JSON"):
        tx.parse_export_times("[{")
    with pytest.raises(tx.TrtexecParseError, match="non-empty list"):
        tx.parse_export_times("{}")
    with pytest.raises(tx.TrtexecParseError, match=r"record 0 lacks \['computeMs'"):
        tx.parse_export_times(json.dumps([{k: 1.0 for k in tx.EXPORT_TIMES_KEYS if k != "computeMs"}]))


# ---------------------------------------------------------------------------- running (fake trtexec)

FAKE_TRTEXEC = """
import json, shutil, sys
from pathlib import Path
args = sys.argv[1:]
log = Path({log!r}).read_text()
banner = log.splitlines()[0]
if args == ["--help"]:
    print(banner.split(" # ")[0] + " # trtexec --help")
    print("=== Model Options ===")
    sys.exit(0)
with open({calls!r}, "a") as handle:
    handle.write(json.dumps(args) + "\\n")
if {fail!r}:
    print(banner)
    print("[09/14/2025-08:12:09] [E] Error[4]: [network.cpp::validate::3100] Error Code 4: Internal Error")
    print(banner.replace("RUNNING", "FAILED"))
    sys.exit(1)
for arg in args:
    if arg.startswith("--exportTimes="):
        shutil.copy({times!r}, arg.split("=", 1)[1])
print(log)
"""


def _install_fake(tmp_path: Path, fail: bool = False) -> tuple[Path, Path]:
    calls = tmp_path / "calls.jsonl"
    body = FAKE_TRTEXEC.format(log=str(TRT10_LOG), times=str(TRT10_TIMES), calls=str(calls), fail=fail)
    return _fake_exe(tmp_path / "trtexec", body), calls


def test_benchmark_with_a_fake_trtexec(tmp_path: Path) -> None:
    exe, calls = _install_fake(tmp_path)
    assert tx.detect_version(exe) == (10, 3, 0)
    records = tx.benchmark_with_trtexec(
        tmp_path / "m.onnx", tmp_path / "work", [8, 16], 256, "fp16", 1.0, 3.0, trtexec=exe
    )
    assert [r["batch_size"] for r in records] == [8, 16]
    assert records[1]["pairs_per_second"] == pytest.approx(16 * 3.73171)
    assert records[1]["export_pairs_per_second"] == pytest.approx(16 * 3.73171, rel=1e-5)
    assert records[0]["tool"] == "trtexec" and records[0]["tensorrt_version"] == "10.3.0"
    first, second = (json.loads(line) for line in calls.read_text().splitlines())
    assert "--fp16" in first and "--noDataTransfers" in first
    assert f"--saveEngine={tmp_path / 'work' / 'engine-b8.plan'}" in first
    assert "--maxShapes=input0:16x3x256x256,input1:16x3x256x256" in second
    assert (tmp_path / "work" / "trtexec-b16.log").read_text().startswith("&&&& RUNNING")


def test_a_failing_trtexec_reports_its_log(tmp_path: Path) -> None:
    exe, _ = _install_fake(tmp_path, fail=True)
    with pytest.raises(tx.TrtexecError, match=r"(?s)exit 1.*Error Code 4"):
        tx.benchmark_with_trtexec(tmp_path / "m.onnx", tmp_path / "work", [1], 64, "fp16", 0.1, 0.1, trtexec=exe)


# ---------------------------------------------------------------------------- engine-build decisions


def test_trt10_is_weakly_typed_with_precision_flags() -> None:
    fp16 = plan_build(10, "fp16", "fp32")
    assert (fp16.strongly_typed, fp16.builder_flags, fp16.network_flags) == (False, ("FP16",), ())
    assert plan_build(10, "int8", "int8").builder_flags == ("INT8",)
    assert plan_build(10, "best").builder_flags == ("FP16", "INT8")
    strong = plan_build(10, "onnx", "fp16")
    assert (strong.strongly_typed, strong.network_flags, strong.precision) == (True, ("STRONGLY_TYPED",), "fp16")


def test_trt10_int8_needs_qdq() -> None:
    with pytest.raises(EngineBuildError, match="Q/DQ"):
        plan_build(10, "int8", "fp32")


def test_trt11_takes_precision_from_the_onnx() -> None:
    plan = plan_build(11, "fp16", "fp16")
    assert (plan.strongly_typed, plan.builder_flags, plan.precision) == (True, (), "fp16")
    assert plan_build(11, "onnx", "int8").precision == "int8"
    with pytest.raises(EngineBuildError, match=r"strongly typed.*AutoCast"):
        plan_build(11, "fp16", "fp32")
    with pytest.raises(EngineBuildError, match="no 'best'"):
        plan_build(11, "best", "fp16")


def test_unsupported_versions_and_precisions() -> None:
    with pytest.raises(EngineBuildError, match="not supported"):
        plan_build(8, "fp16")
    with pytest.raises(EngineBuildError, match="unknown precision"):
        plan_build(10, "fp64")
    assert trt_major_version("10.3.0.26") == 10
    with pytest.raises(EngineBuildError, match="major version"):
        trt_major_version("dev")
    assert profile_shapes(1, 16, 32, 256) == ((1, 3, 256, 256), (16, 3, 256, 256), (32, 3, 256, 256))
    with pytest.raises(EngineBuildError, match="min <= opt <= max"):
        profile_shapes(1, 64, 32, 256)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, "fp32"), ({"dtype": "fp16"}, "fp16"), ({"qdq": "int8"}, "int8"), ({"qdq": "fp8"}, "fp8")],
)
def test_detect_onnx_precision(tmp_path: Path, kwargs: dict, expected: str) -> None:
    assert detect_onnx_precision(write_tiny_change_onnx(tmp_path / "m.onnx", **kwargs)) == expected


def test_engine_profiles_use_the_onnx_traced_size(tmp_path: Path) -> None:
    onnx_path = write_tiny_change_onnx(tmp_path / "m.onnx", image_size=96)
    assert onnx_image_size(onnx_path, fallback=256) == 96
    with pytest.raises(EngineBuildError, match="no input named 'x'"):
        onnx_image_size(onnx_path, 256, input_name="x")


def test_detect_onnx_precision_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(EngineBuildError, match="not a readable ONNX"):
        detect_onnx_precision(bad)


def test_build_engine_with_the_tensorrt_api(tmp_path: Path) -> None:
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (NVIDIA-only wheels, needs a GPU): engine build runs on GPU hosts"
    )
    from components.benchmarking.tensorrt_build import build_engine

    onnx_path = write_tiny_change_onnx(tmp_path / "m.onnx")
    cache = tmp_path / "timing.cache"
    plan = build_engine(
        onnx_path, tmp_path / "e.plan", 64, max_batch=4, opt_batch=2, precision="onnx", timing_cache=cache
    )
    assert plan.precision == "fp32"
    assert (tmp_path / "e.plan").stat().st_size > 0 and cache.stat().st_size > 0


def test_build_engine_without_tensorrt_says_so(tmp_path: Path) -> None:
    if _tensorrt_importable():
        pytest.skip("tensorrt is importable here")
    from components.benchmarking.runtimes import RuntimeUnavailable
    from components.benchmarking.tensorrt_build import build_engine

    with pytest.raises(RuntimeUnavailable, match="TensorRT is not available on this machine"):
        build_engine(write_tiny_change_onnx(tmp_path / "m.onnx"), tmp_path / "e.plan", 64, max_batch=2)


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True
