"""Runtime variants: the spec, its validation, the PyTorch steps it builds, and CUDA paths on a machine without CUDA.

Everything but the CUDA kernels themselves runs here: the CUDA plan is applied to a tiny model
on the CPU (``torch.cuda.synchronize`` and ``torch.compile`` stand-ins record what was called).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import yaml
from typer.testing import CliRunner

from components.benchmarking import runtimes
from components.benchmarking.bench import (
    as_variant,
    benchmark_platform,
    collect_fanout_results,
    recorded_platform,
    results_path,
    run_benchmark,
)
from components.benchmarking.compare import PlatformOutcome, build_rows
from components.benchmarking.platforms import load_platforms
from components.benchmarking.runtimes import (
    RuntimeUnavailable,
    TorchRunner,
    check_available,
    cpu_name,
    io_binding_runner,
    load_runtime,
    torch_plan,
)
from components.benchmarking.variants import RuntimeVariant, VariantError, cli_variant, parse_variant
from components.cli import app
from components.config import parse_params
from tests.benchmark_models import write_tiny_change_onnx
from tests.conftest import tiny_params_dict


class _PairModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.conv(test - golden)
        return out, out.relu()


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no GPU; make that explicit so the tests mean the same on one that has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ---------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("variant", "label", "slug"),
    [
        (RuntimeVariant("pytorch"), "pytorch cpu fp32", "pytorch-fp32"),
        (
            RuntimeVariant("pytorch", "cuda", "fp16", channels_last=True, compile_mode="default"),
            "pytorch cuda fp16 channels-last compile",
            "pytorch-cuda-fp16-channels-last-compile",
        ),
        (
            RuntimeVariant("pytorch", "cuda", "bf16", compile_mode="max-autotune-no-cudagraphs"),
            "pytorch cuda bf16 compile=max-autotune-no-cudagraphs",
            "pytorch-cuda-bf16-compile-max-autotune-no-cudagraphs",
        ),
        (RuntimeVariant("pytorch", precision="bf16", channels_last=True), "pytorch cpu bf16 channels-last", None),
        (RuntimeVariant("onnxruntime", "cuda", "fp32"), "onnxruntime CUDA EP fp32", "onnxruntime-cuda-fp32"),
        (RuntimeVariant("onnxruntime", precision="int8-cpu"), "onnxruntime CPU EP int8-cpu", "onnxruntime-int8-cpu"),
        (RuntimeVariant("tensorrt", precision="fp16"), "tensorrt fp16", "tensorrt-fp16"),
    ],
)
def test_a_variant_has_a_label_for_people_and_a_slug_for_files(
    variant: RuntimeVariant, label: str, slug: str | None
) -> None:
    assert variant.label == label
    if slug is not None:
        assert variant.slug == slug
    assert parse_variant(label) == variant  # the label reads back


def test_defaults_and_shell_friendly_spellings() -> None:
    assert RuntimeVariant("pytorch") == RuntimeVariant("pytorch", "cpu", "fp32")
    assert RuntimeVariant("tensorrt").device == "cuda"
    assert RuntimeVariant("onnxruntime").precision is None  # read from the ONNX later
    assert parse_variant("pytorch+cuda+bf16") == RuntimeVariant("pytorch", "cuda", "bf16")
    assert parse_variant("PyTorch, CUDA, fp16, channels_last, compile=max-autotune") == RuntimeVariant(
        "pytorch", "cuda", "fp16", channels_last=True, compile_mode="max-autotune"
    )
    assert parse_variant("onnxruntime cuda").label == "onnxruntime CUDA EP"
    assert RuntimeVariant("onnxruntime", "cuda").with_precision("fp32").label == "onnxruntime CUDA EP fp32"
    assert cli_variant("pytorch", "cuda", "fp16", True, True) == RuntimeVariant(
        "pytorch", "cuda", "fp16", channels_last=True, compile_mode="default"
    )
    assert cli_variant("pytorch", compile_=True, compile_mode="reduce-overhead").compile_mode == "reduce-overhead"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RuntimeVariant("openvino"), r"unknown runtime 'openvino'; choose from \['pytorch'"),
        (lambda: RuntimeVariant("pytorch", "gpu"), r"unknown device 'gpu'; choose from \['cpu', 'cuda'\]"),
        (lambda: RuntimeVariant("onnxruntime", channels_last=True), "--channels-last applies to the pytorch runtime"),
        (lambda: RuntimeVariant("tensorrt", compile_mode="default"), "--compile applies to the pytorch runtime"),
        (lambda: RuntimeVariant("pytorch", precision="int8"), r"pytorch runs in \['fp32', 'bf16', 'fp16'\]"),
        (lambda: RuntimeVariant("pytorch", "cpu", "fp16"), "fp16 on a CPU .* use bf16"),
        (lambda: RuntimeVariant("tensorrt", "cpu"), "TensorRT runs on an NVIDIA GPU only: use --device cuda"),
        (lambda: RuntimeVariant("tensorrt", precision="int4"), "unknown TensorRT precision 'int4'"),
        (lambda: RuntimeVariant("pytorch", compile_mode="fast"), "unknown compile mode 'fast'"),
        (lambda: RuntimeVariant("onnxruntime", precision="a/b"), "precision label 'a/b'"),
        (lambda: parse_variant("  "), "empty runtime variant"),
        (lambda: parse_variant("pytorch cuda cpu"), "'pytorch cuda cpu': device given twice"),
        (lambda: parse_variant("pytorch cuda fp16 bf16"), "precision given twice"),
        (lambda: parse_variant("pytorch cpu int8"), r"'pytorch cpu int8': pytorch runs in"),
        (lambda: cli_variant("pytorch", compile_mode="max-autotune"), "--compile-mode max-autotune needs --compile"),
    ],
)
def test_a_variant_that_would_measure_something_else_is_refused(make: Any, match: str) -> None:
    with pytest.raises(VariantError, match=match):
        make()


def test_run_benchmark_takes_a_name_or_a_variant(tiny_params: Any) -> None:
    assert as_variant("onnxruntime", "int8-cpu") == RuntimeVariant("onnxruntime", precision="int8-cpu")
    assert as_variant(RuntimeVariant("onnxruntime", "cuda"), "fp32").precision == "fp32"
    with pytest.raises(ValueError, match="contradicts"):
        as_variant(RuntimeVariant("pytorch", precision="bf16"), "fp32")
    # A CUDA number is never filed under the CPU platform (params' default), nor the reverse.
    assert recorded_platform(tiny_params, RuntimeVariant("pytorch", "cuda")) == "local-cuda"
    assert recorded_platform(tiny_params, RuntimeVariant("pytorch")) == "cpu"
    gpu = parse_params({**tiny_params.model_dump(mode="json"), "benchmark": {"platform": "h100"}})
    assert recorded_platform(gpu, RuntimeVariant("tensorrt")) == "h100"
    assert recorded_platform(gpu, RuntimeVariant("onnxruntime")) == "local-cpu"
    assert recorded_platform(gpu, RuntimeVariant("onnxruntime"), "cpu") == "cpu"


# ---------------------------------------------------------------------------- PyTorch steps


def test_torch_plans_name_each_step() -> None:
    fp32 = torch_plan(RuntimeVariant("pytorch", "cuda"))
    assert (fp32.weights_dtype, fp32.input_dtype, fp32.autocast_dtype) == (None, "float32", None)
    assert fp32.synchronize and fp32.cudnn_benchmark
    bf16 = torch_plan(RuntimeVariant("pytorch", "cuda", "bf16"))
    assert (bf16.weights_dtype, bf16.input_dtype, bf16.autocast_dtype) == (None, "float32", "bfloat16")
    fp16 = torch_plan(RuntimeVariant("pytorch", "cuda", "fp16", channels_last=True, compile_mode="default"))
    assert (fp16.weights_dtype, fp16.input_dtype, fp16.autocast_dtype) == ("float16", "float16", None)
    assert fp16.steps() == [
        "model.to('cuda')",
        "model.to(torch.float16)",
        "model.to(memory_format=torch.channels_last)",
        "torch.compile(model, mode='default', dynamic=False)",
        "torch.backends.cudnn.benchmark = True",
        "inputs: torch.float16, torch.channels_last, on cuda (made once per batch size)",
        "call under torch.inference_mode()",
        "torch.cuda.synchronize() after each call",
    ]
    assert "torch.autocast('cuda', dtype=torch.bfloat16)" in bf16.steps()[-2]
    cpu = torch_plan(RuntimeVariant("pytorch", precision="bf16"))
    assert not cpu.synchronize and not cpu.cudnn_benchmark and cpu.device == "cpu"
    with pytest.raises(ValueError, match="pytorch runtime"):
        torch_plan(RuntimeVariant("onnxruntime"))


class _Recorder:
    """Stands in for torch.cuda.synchronize and torch.compile (eager backend: dynamo runs, no C++ build)."""

    def __init__(self) -> None:
        self.synchronized = 0
        self.compiled: list[dict[str, Any]] = []
        self._compile = torch.compile

    def synchronize(self) -> None:
        self.synchronized += 1

    def compile(self, model: Any, **kwargs: Any) -> Any:
        self.compiled.append(kwargs)
        return self._compile(model, backend="eager", dynamic=kwargs.get("dynamic"))


def _output_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    model.conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    return seen


def test_the_cuda_plan_runs_its_steps_on_a_cpu_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast + channels-last + torch.compile + a synchronize per call, CUDA's plan applied on the CPU."""
    recorder = _Recorder()
    monkeypatch.setattr(torch.cuda, "synchronize", recorder.synchronize)
    monkeypatch.setattr(torch, "compile", recorder.compile)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: recorder.compiled.append({"reset": True}))
    variant = RuntimeVariant("pytorch", "cuda", "bf16", channels_last=True, compile_mode="max-autotune-no-cudagraphs")
    plan = replace(torch_plan(variant), device="cpu")  # everything but the device: CUDA's
    model = _PairModel()
    dtypes = _output_dtypes(model)
    benchmark_before = torch.backends.cudnn.benchmark
    runner = TorchRunner(model, plan, image_size=16, seed=0)
    assert torch.backends.cudnn.benchmark
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert recorder.compiled == [{"mode": "max-autotune-no-cudagraphs", "dynamic": False}]

    runner.prepare(2)  # compile and first calls, outside the timed ones
    assert recorder.synchronized == 1 + TorchRunner.PREPARE_CALLS_COMPILED  # inputs made, then each call
    runner.run_batch(2)
    assert recorder.synchronized == 2 + TorchRunner.PREPARE_CALLS_COMPILED
    for tensor in runner.inputs(2):
        assert tensor.dtype == torch.float32 and tensor.is_contiguous(memory_format=torch.channels_last)
    assert set(dtypes) == {torch.bfloat16}  # autocast ran the convolution in bf16

    runner.close()
    assert recorder.compiled[-1] == {"reset": True}
    assert torch.backends.cudnn.benchmark == benchmark_before


def test_the_fp16_plan_converts_the_model_and_its_inputs() -> None:
    plan = replace(torch_plan(RuntimeVariant("pytorch", "cuda", "fp16")), device="cpu", synchronize=False)
    model = _PairModel()
    dtypes = _output_dtypes(model)
    runner = TorchRunner(model, plan, image_size=8)
    runner.run_batch(1)
    assert model.conv.weight.dtype == torch.float16
    assert runner.inputs(1)[0].dtype == torch.float16
    assert dtypes == [torch.float16]
    runner.close()


def test_a_cpu_variant_loads_and_says_how_it_ran(tmp_path: Path) -> None:
    module_path = tmp_path / "model.pt"
    torch.save(_PairModel(), module_path)
    loaded = load_runtime(RuntimeVariant("pytorch", precision="bf16", channels_last=True), module_path, 16, threads=1)
    assert loaded.prepare is not None
    loaded.prepare(2)
    loaded.run_batch(2)
    assert loaded.variant == RuntimeVariant("pytorch", precision="bf16", channels_last=True)
    assert loaded.device == cpu_name() != ""
    assert "model.to(memory_format=torch.channels_last)" in loaded.details["steps"]
    assert not any("synchronize" in step for step in loaded.details["steps"])
    loaded.close()


# ---------------------------------------------------------------------------- CUDA without CUDA


def test_cuda_variants_without_a_gpu_are_unavailable(tmp_path: Path, no_cuda: None) -> None:
    module_path = tmp_path / "model.pt"
    torch.save(_PairModel(), module_path)
    onnx_path = write_tiny_change_onnx(tmp_path / "model.onnx", image_size=16)
    with pytest.raises(RuntimeUnavailable, match=r"pytorch --device cuda needs an NVIDIA GPU.*use --device cpu"):
        load_runtime(RuntimeVariant("pytorch", "cuda", "fp16"), module_path, 16)
    with pytest.raises(RuntimeUnavailable, match="onnxruntime --device cuda needs an NVIDIA GPU"):
        load_runtime(RuntimeVariant("onnxruntime", "cuda"), onnx_path, 16)
    with pytest.raises(RuntimeUnavailable, match="needs an NVIDIA GPU"):
        check_available(RuntimeVariant("pytorch", "cuda"))


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_onnxruntime_cuda_needs_the_gpu_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    onnx_path = write_tiny_change_onnx(tmp_path / "model.onnx", image_size=16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, but onnxruntime's CPU build
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeUnavailable, match=r"no CUDAExecutionProvider .* CPU build\. Install onnxruntime-gpu"):
        load_runtime(RuntimeVariant("onnxruntime", "cuda"), onnx_path, 16)
    with pytest.raises(RuntimeUnavailable, match="no CUDAExecutionProvider"):
        check_available(RuntimeVariant("onnxruntime", "cuda"))
    # A GPU build whose CUDA libraries do not load: onnxruntime falls back to the CPU silently.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(RuntimeUnavailable, match="could not start CUDAExecutionProvider"):
        load_runtime(RuntimeVariant("onnxruntime", "cuda"), onnx_path, 16)


def test_io_binding_feeds_device_resident_inputs(tmp_path: Path) -> None:
    """The CUDA EP path's IO binding, exercised with CPU memory."""
    import numpy as np
    import onnxruntime as ort

    onnx_path = write_tiny_change_onnx(tmp_path / "model.onnx", image_size=16)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {name: rng.random((2, 3, 16, 16), dtype=np.float32) for name in ("input0", "input1")}
    made: list[int] = []

    def make(batch: int) -> dict[str, np.ndarray]:
        made.append(batch)
        return feeds

    run_batch, clear = io_binding_runner(session, make, "cpu")
    run_batch(2)
    run_batch(2)
    assert made == [2]  # inputs copied once, not per call
    bound = runtimes._BoundFeeds(session, feeds, "cpu")
    session.run_with_iobinding(bound.binding)
    (output,) = bound.binding.copy_outputs_to_cpu()
    np.testing.assert_allclose(output, session.run(None, feeds)[0], rtol=1e-6)
    clear()


def _cli_params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params_dict(tmp_path)))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime", "pytorch", "--device", "cuda"], "error: pytorch --device cuda needs an NVIDIA GPU"),
        (["--runtime", "onnxruntime", "--device", "cuda"], "error: onnxruntime --device cuda needs an NVIDIA GPU"),
        (["--runtime", "onnxruntime", "--channels-last"], "error: --channels-last applies to the pytorch runtime"),
        (["--runtime", "pytorch", "--compile-mode", "max-autotune"], "error: --compile-mode max-autotune needs"),
        (["--runtime", "pytorch", "--device", "tpu"], "error: unknown device 'tpu'"),
    ],
)
def test_the_cli_refuses_cleanly_and_records_nothing(
    tmp_path: Path, no_cuda: None, args: list[str], message: str
) -> None:
    module_path = tmp_path / "model.pt"
    torch.save(_PairModel(), module_path)
    onnx_path = write_tiny_change_onnx(tmp_path / "model.onnx", image_size=16)
    model = onnx_path if "onnxruntime" in args else module_path
    result = CliRunner().invoke(
        app, ["benchmark", "--model", str(model), *args, "--params", str(_cli_params(tmp_path))]
    )
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "artifacts" / "reports" / "benchmarks").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_variant_runs_are_recorded_with_their_label_and_device(tmp_path: Path) -> None:
    raw = tiny_params_dict(tmp_path, benchmark={"warmup_seconds": 0.0, "duration_seconds": 0.02, "threads": 1})
    params = parse_params(raw)
    module_path = tmp_path / "model.pt"
    torch.save(_PairModel(), module_path)
    variant = RuntimeVariant("pytorch", precision="bf16", channels_last=True)
    (record,) = run_benchmark(params, module_path, variant, batch_sizes=(2,))
    assert record["variant"] == "pytorch cpu bf16 channels-last"
    assert (record["runtime"], record["precision"], record["device"]) == ("pytorch", "bf16", cpu_name())
    assert record["prepare_seconds"] > 0 and record["platform"] == "cpu"

    path = results_path(params, "cpu", "pytorch", "bf16", variant)
    assert path.name == "cpu-pytorch-bf16-channels-last.json"
    saved = json.loads(path.read_text())
    assert (saved["variant"], saved["device"]) == ("pytorch cpu bf16 channels-last", cpu_name())
    assert saved["results"][0]["runtime_details"]["steps"][0] == "model.to('cpu')"

    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    (run,) = mlflow.search_runs([experiment.experiment_id], output_format="list")
    assert run.data.tags["variant"] == "pytorch cpu bf16 channels-last"
    assert run.data.tags["device"] == cpu_name()
    assert run.info.run_name == "benchmark-cpu-pytorch-bf16-channels-last"

    # A platform's run (the fan-out child) reaches the parent's table through MLflow with both.
    onnx_path = write_tiny_change_onnx(tmp_path / "model.onnx", image_size=16)
    summary = benchmark_platform(params, "cpu", str(onnx_path), extra_tags={"fanout_id": "f1"})
    assert (summary["variant"], summary["device"]) == ("onnxruntime CPU EP fp32", cpu_name())
    assert [r["batch_size"] for r in summary["results"]] == [1, 8]
    records = collect_fanout_results(params, "f1")["cpu"]
    assert {(r["variant"], r["device"], r["precision"]) for r in records} == {
        ("onnxruntime CPU EP fp32", cpu_name(), "fp32")
    }
    rows = build_rows(load_platforms().select(["cpu"]), {"cpu": PlatformOutcome("cpu", "ok", results=records)})
    assert {(row.runtime, row.device) for row in rows} == {("onnxruntime CPU EP fp32", cpu_name())}
