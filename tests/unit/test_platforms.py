"""platforms.yaml, the comparison table, the per-platform deployment specs and model references."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import yaml

from components.benchmarking.compare import (
    PlatformOutcome,
    build_rows,
    comparison_metrics,
    outcome_from_flow_run,
    outcome_status,
    rows_to_markdown,
    rows_to_table,
)
from components.benchmarking.deployments import deployment_name, platform_deployment_specs
from components.benchmarking.model_ref import ModelRefError, parse_models_uri, pick_model_file, resolve_model
from components.benchmarking.platforms import PlatformError, load_platforms, parse_platforms
from components.config import parse_params
from tests.benchmark_models import write_tiny_change_onnx
from tests.conftest import tiny_params_dict

TAO_FAN_HYBRID_BASE_FP16 = {
    "jetson-orin-nano": (16, 15.19),
    "jetson-orin-nx": (16, 21.92),
    "jetson-agx-orin": (16, 55.07),
    "a2": (16, 36.02),
    "t4": (16, 59.7),
    "l4": (8, 131.48),
    "a30": (16, 204.12),
    "l40": (8, 364.0),
    "a100": (32, 435.18),
    "h100": (32, 841.68),
}


# ---------------------------------------------------------------------------- platforms.yaml


def test_packaged_platforms_carry_the_tao_reference_numbers() -> None:
    registry = load_platforms()
    assert set(registry.platforms) == {*TAO_FAN_HYBRID_BASE_FP16, "cpu"}
    for name, (batch, fps) in TAO_FAN_HYBRID_BASE_FP16.items():
        platform = registry.get(name)
        assert platform.reference is not None
        assert (platform.reference.batch_size, platform.reference.fps) == (batch, fps)
        assert (platform.runtime, platform.precision) == ("tensorrt", "fp16")
    cpu = registry.get("cpu")
    assert (cpu.runtime, cpu.reference, cpu.work_pool) == ("onnxruntime", None, "cpu-local")
    assert registry.get("t4").work_pool == "gpu-t4"
    assert registry.get("jetson-orin-nano").trtexec_path == Path("/usr/src/tensorrt/bin/trtexec")


def test_the_params_platform_is_known() -> None:
    from components.config import load_params
    from tests.conftest import REPO_ROOT

    params = load_params(REPO_ROOT / "params.yaml")
    load_platforms().select(sorted({params.benchmark.platform, *params.benchmark.platforms}))


def test_unknown_platforms_are_named() -> None:
    registry = load_platforms()
    with pytest.raises(PlatformError, match=r"unknown platform 'v100'; known: .*t4"):
        registry.get("v100")
    with pytest.raises(PlatformError, match=r"\['x', 'y'\]"):
        registry.select(["cpu", "x", "y"])
    with pytest.raises(PlatformError, match="more than once"):
        registry.select(["cpu", "cpu"])


def _entry(**overrides: object) -> dict:
    entry = {
        "display_name": "T4",
        "kind": "gpu",
        "runtime": "tensorrt",
        "precision": "fp16",
        "work_pool": "gpu-t4",
        "reference": {"batch_size": 16, "fps": 59.7},
    }
    entry.update(overrides)
    return entry


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (_entry(reference={"batch_size": 0, "fps": 59.7}), r"platforms\.t4\.reference\.batch_size"),
        (_entry(runtime="onnxruntime"), "benchmarks TensorRT engines"),
        (_entry(kind="cpu"), "cannot run TensorRT"),
        (_entry(precision="fp12"), r"platforms\.t4\.precision"),
        (_entry(colour="green"), r"platforms\.t4\.colour"),
        ("t4", "must be a mapping"),
    ],
)
def test_bad_entries_name_platform_and_key(entry: object, match: str) -> None:
    with pytest.raises(PlatformError, match=match):
        parse_platforms({"platforms": {"t4": entry}}, "test.yaml")


def test_load_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="not found"):
        load_platforms(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("platforms: [")
    with pytest.raises(PlatformError, match="not valid YAML"):
        load_platforms(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"platforms": {}}))
    with pytest.raises(PlatformError, match="non-empty mapping"):
        load_platforms(empty)


# ---------------------------------------------------------------------------- comparison table


def test_rows_compare_at_the_reference_batch_and_report_failures() -> None:
    registry = load_platforms()
    platforms = registry.select(["cpu", "t4", "l4", "a100"])
    outcomes = {
        "cpu": PlatformOutcome(
            "cpu",
            "ok",
            results=[{"batch_size": 8, "pairs_per_second": 2.0}, {"batch_size": 1, "pairs_per_second": 1.0}],
        ),
        "t4": PlatformOutcome("t4", "failed", "RuntimeUnavailable: TensorRT is not available on this machine"),
        "l4": PlatformOutcome("l4", "ok", results=[{"batch_size": 8, "pairs_per_second": 131.48 / 2}]),
        "a100": PlatformOutcome("a100", "ok", results=[{"batch_size": 8, "pairs_per_second": 300.0}]),
    }
    rows = build_rows(platforms, outcomes)
    by = {(row.platform, row.batch_size): row for row in rows}
    assert [row.batch_size for row in rows if row.platform == "cpu"] == [1, 8]
    assert by[("cpu", 8)].ratio is None and by[("cpu", 8)].reference_fps is None
    t4 = by[("t4", 16)]
    assert (t4.status, t4.measured_fps, t4.reference_fps) == ("failed", None, 59.7)
    assert "TensorRT is not available" in t4.message
    assert by[("l4", 8)].ratio == pytest.approx(0.5)
    assert "reference batch 32 not measured" in by[("a100", 32)].message

    table = rows_to_table(rows)
    assert table["platform"] == [row.platform for row in rows]
    assert set(table) >= {"batch_size", "measured_fps", "reference_fps", "ratio", "status", "message"}
    markdown = rows_to_markdown(rows, note="model x")
    assert "| NVIDIA T4 | – | tensorrt | fp16 | 16 | – | 59.70 | – | failed | RuntimeUnavailable" in markdown
    metrics = comparison_metrics(rows)
    assert metrics["compare/l4/ratio_to_reference"] == pytest.approx(0.5)
    assert metrics["compare/cpu/b8/pairs_per_second"] == 2.0
    assert (metrics["compare/platforms"], metrics["compare/platforms_failed"]) == (4.0, 1.0)


def test_missing_or_empty_outcomes_are_rows_too() -> None:
    platforms = load_platforms().select(["cpu", "h100"])
    rows = build_rows(platforms, {"cpu": PlatformOutcome("cpu", "ok")})
    assert [(row.platform, row.status) for row in rows] == [("cpu", "failed"), ("h100", "missing")]
    assert rows[0].message == "no measurements recorded"


def _flow_run(state_type: str, name: str, message: str | None = None) -> SimpleNamespace:
    state = SimpleNamespace(type=SimpleNamespace(value=state_type), name=name, message=message)
    return SimpleNamespace(id="f-1", state=state)


def test_outcomes_from_child_states() -> None:
    assert outcome_status("COMPLETED") == "ok"
    assert outcome_status("CRASHED") == "crashed"
    assert outcome_status(None) == "missing"
    ok = outcome_from_flow_run("cpu", _flow_run("COMPLETED", "Completed"), 60, "cpu-local")
    assert (ok.status, ok.message, ok.flow_run_id) == ("ok", "", "f-1")
    failed = outcome_from_flow_run(
        "t4", _flow_run("FAILED", "Failed", "Flow run encountered an exception: X"), 60, "gpu-t4"
    )
    assert (failed.status, failed.message) == ("failed", "Flow run encountered an exception: X")
    late = outcome_from_flow_run("t4", _flow_run("SCHEDULED", "Scheduled"), 60, "gpu-t4")
    assert late.status == "timed out"
    assert "worker polling work pool 'gpu-t4'" in late.message


# ---------------------------------------------------------------------------- deployments


def test_one_deployment_per_platform_on_its_work_pool() -> None:
    specs = platform_deployment_specs(load_platforms(), ["cpu", "jetson-orin-nano"], params_path="params.yaml")
    assert [(s.full_name, s.work_pool) for s in specs] == [
        ("benchmark-platform/cpu", "cpu-local"),
        ("benchmark-platform/jetson-orin-nano", "jetson-orin-nano"),
    ]
    assert specs[1].parameters == {"params_path": "params.yaml", "platform": "jetson-orin-nano"}
    assert "jetson" in specs[1].tags
    assert deployment_name("t4") == "benchmark-platform/t4"
    assert len(platform_deployment_specs(load_platforms())) == 11


# ---------------------------------------------------------------------------- model references


def test_default_model_is_the_champion_and_metrics_round_trip(tmp_path: Path) -> None:
    from components.benchmarking.bench import default_model_uri, records_from_metrics

    params = parse_params(tiny_params_dict(tmp_path))
    assert default_model_uri(params) == "models:/inspectops-changenet-segment@champion"
    metrics = {"bench/b8/pairs_per_second": 2.0, "bench/b1/qps": 3.0, "bench/b1/pairs_per_second": 3.0, "other": 1.0}
    assert records_from_metrics(metrics) == [
        {"batch_size": 1, "qps": 3.0, "pairs_per_second": 3.0},
        {"batch_size": 8, "pairs_per_second": 2.0},
    ]


def test_models_uri_forms() -> None:
    assert parse_models_uri("models:/seg/3") == ("seg", "3", None)
    assert parse_models_uri("models:/seg@champion") == ("seg", None, "champion")
    with pytest.raises(ModelRefError, match="models:/<name>/<version>"):
        parse_models_uri("models:/seg")


def test_pick_model_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.onnx").write_bytes(b"x")
    (tmp_path / "MLmodel").write_text("flavors: {}")
    assert pick_model_file(tmp_path, "onnxruntime") == tmp_path / "data" / "model.onnx"
    (tmp_path / "other.onnx").write_bytes(b"x")
    assert pick_model_file(tmp_path, "tensorrt") == tmp_path / "data" / "model.onnx"  # model.* wins a tie
    with pytest.raises(ModelRefError, match=r"no \['.ckpt', '.pt', '.pth'\] file"):
        pick_model_file(tmp_path, "pytorch")
    with pytest.raises(ModelRefError, match="needs one of"):
        pick_model_file(tmp_path / "MLmodel", "onnxruntime")


def test_resolve_registered_versions_and_aliases(tmp_path: Path) -> None:
    params = parse_params(tiny_params_dict(tmp_path))
    onnx_path = write_tiny_change_onnx(tmp_path / "export" / "model.onnx")
    torch_file = tmp_path / "pytorch" / "model.pth"
    torch_file.parent.mkdir()
    torch_file.write_bytes(b"pickled module")
    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    mlflow.set_experiment(params.tracking.experiment)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(onnx_path), artifact_path="onnx")
        mlflow.log_artifact(str(torch_file), artifact_path="model/data")
    client = mlflow.MlflowClient()
    client.create_registered_model("seg-test")
    for source in ("onnx", "model"):  # v1 holds the ONNX itself, v2 a PyTorch model (its ONNX is in the run)
        client.create_model_version("seg-test", f"{run.info.artifact_uri}/{source}", run_id=run.info.run_id)
    client.set_registered_model_alias("seg-test", "champion", "2")

    by_version = resolve_model(params, "models:/seg-test/1", "onnxruntime", tmp_path / "dl1")
    assert by_version.path.name == "model.onnx" and by_version.version == "1" and by_version.name == "seg-test"
    by_alias = resolve_model(params, "models:/seg-test@champion", "tensorrt", tmp_path / "dl2")
    assert by_alias.version == "2"
    assert by_alias.path.read_bytes() == onnx_path.read_bytes()
    assert resolve_model(params, "models:/seg-test/2", "pytorch", tmp_path / "dl3").path.name == "model.pth"
    local = resolve_model(params, str(onnx_path), "onnxruntime", tmp_path / "dl4", model_version="7")
    assert (local.path, local.version) == (onnx_path, "7")
    with pytest.raises(ModelRefError, match="alias not found"):
        resolve_model(params, "models:/seg-test@nope", "onnxruntime", tmp_path / "dl5")
    with pytest.raises(ModelRefError, match="model not found"):
        resolve_model(params, str(tmp_path / "missing.onnx"), "onnxruntime", tmp_path / "dl6")


def test_a_row_names_the_precision_measured_not_the_platforms_default() -> None:
    """The CPU platform defaults to fp32, but the pipeline's fastest CPU model is the INT8 one."""
    (cpu,) = load_platforms().select(["cpu"])
    outcome = PlatformOutcome(
        "cpu", "ok", results=[{"batch_size": 8, "pairs_per_second": 8.0, "precision": "int8-cpu"}]
    )
    (row,) = build_rows([cpu], {"cpu": outcome})
    assert row.precision == "int8-cpu"
    assert "| int8-cpu | 8 |" in rows_to_markdown([row])


def test_a_row_names_the_variant_and_device_that_made_its_number() -> None:
    """A GPU box's PyTorch numbers say how the model ran and on what, not just the platform's runtime."""
    (h100,) = load_platforms().select(["h100"])
    record = {
        "batch_size": 32,
        "pairs_per_second": 1020.0,
        "variant": "pytorch cuda fp16 channels-last compile",
        "precision": "fp16",
        "device": "NVIDIA H200",
    }
    rows = build_rows([h100], {"h100": PlatformOutcome("h100", "ok", results=[record])})
    (row,) = rows
    assert (row.runtime, row.precision, row.device) == (
        "pytorch cuda fp16 channels-last compile",
        "fp16",
        "NVIDIA H200",
    )
    assert row.ratio == pytest.approx(1020.0 / 841.68)
    assert rows_to_table(rows)["device"] == ["NVIDIA H200"]
    markdown = rows_to_markdown(rows)
    assert "| platform | device | runtime | precision | batch |" in markdown
    assert "| NVIDIA H100 | NVIDIA H200 | pytorch cuda fp16 channels-last compile | fp16 | 32 | 1020.00 |" in markdown
    # Without a measurement the row names the platform's runtime and no device.
    (missing,) = build_rows([h100], {})
    assert (missing.runtime, missing.device) == ("tensorrt", "")


def test_every_platform_measures_its_reference_batch() -> None:
    from components.benchmarking.bench import platform_batch_sizes

    params = parse_params({"benchmark": {"batch_sizes": [1, 8]}})
    registry = load_platforms()
    assert platform_batch_sizes(params, registry.get("cpu")) == (1, 8)  # TAO publishes no CPU number
    assert platform_batch_sizes(params, registry.get("a100")) == (1, 8, 32)
    assert platform_batch_sizes(params, None) == (1, 8)
