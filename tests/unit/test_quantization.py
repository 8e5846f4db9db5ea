"""Post-training quantization: calibration sample, exact graph rewrites, every backend, promotion flag."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from torch import nn

from components.config import Params
from components.export import OnnxSegmentModel, create_session
from components.export.onnx_export import sidecar_path
from components.export.stage import DeployStageError, deploy_dir, export_stage, fp32_onnx_path, quantize_stage
from components.quantization.calibration import calibration_indices, segment_calibration
from components.quantization.evaluate import judge, record_result
from components.quantization.onnx_rewrite import (
    convtranspose_to_subpixel,
    fuse_pad_into_conv,
    narrow_conv_to_shifted_sum,
)
from components.quantization.torchao_ptq import load_torchao_model
from tests.conftest import REPO_ROOT as REPO
from tests.unit.test_export import SIZE, make_project

QUANT_FILES = {
    "onnxruntime": "segment_int8_qdq.onnx",
    "onnxruntime_cpu": "segment_int8_cpu.onnx",
    "modelopt": "segment_modelopt_int8.onnx",
    "torchao": "segment_torchao_int8wo.pt",
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared CPU: one thread avoids OpenMP spin-waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """A tiny project, exported once and quantized once with every backend (shared: ~15 s)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("deploy")
    params = make_project(
        root,
        export={"parity_samples": 2},
        quantize={"backends": ["onnxruntime", "modelopt", "torchao"], "calibration_samples": 4},
    )
    export_stage(params, "segment")
    quantize_stage(params, "segment")
    return params


def _run_onnx(path: Path, batch: int) -> np.ndarray:
    rng = np.random.default_rng(batch)
    feeds = {name: rng.random((batch, 3, 8, 8), dtype=np.float32) for name in ("x",)}
    return create_session(path).run(None, feeds)[0]


def _export_tiny(module: nn.Module, path: Path, shape: tuple[int, ...]) -> None:
    torch.onnx.export(
        module.eval(),
        (torch.rand(*shape),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamo=False,
    )


# ------------------------------------------------------------------------- calibration


def test_calibration_sample_is_seeded_distinct_and_sorted() -> None:
    first = calibration_indices(100, 32, seed=42)
    assert first == calibration_indices(100, 32, seed=42)
    assert first != calibration_indices(100, 32, seed=43)
    assert len(set(first)) == 32 and first == sorted(first)
    assert calibration_indices(5, 32, seed=0) == [0, 1, 2, 3, 4]


def test_calibration_reads_train_pairs_and_feeds_onnx_names(tmp_path: Path) -> None:
    params = make_project(tmp_path)
    calibration = segment_calibration(params.datasets_dir, 3, params.seed)
    assert len(calibration) == 3 and all(
        name.endswith(("_000", "_001", "_002", "_003", "_004")) for name in calibration.names
    )
    reader = calibration.onnx_reader(batch_size=2)
    feeds = [reader.get_next() for _ in range(3)]
    assert (
        feeds[-1] is None
        and feeds[0]["input0"].shape == (2, 3, SIZE, SIZE)
        and feeds[1]["input1"].shape == (1, 3, SIZE, SIZE)
    )
    reader.rewind()
    assert reader.get_next() is not None


# ---------------------------------------------------------------------- graph rewrites


def test_convtranspose_as_subpixel_conv_is_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ConvTranspose2d(5, 4, 4, stride=2, padding=1),
        nn.ConvTranspose2d(4, 3, 3, stride=2),
    )
    src = tmp_path / "deconv.onnx"
    _export_tiny(layers, src, (1, 3, 8, 8))
    model, count = convtranspose_to_subpixel(onnx.load(str(src)))
    assert count == 1  # the k3/s2 one has no exact sub-pixel form here and is kept
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("ConvTranspose") == 1 and "DepthToSpace" in ops
    dst = tmp_path / "subpixel.onnx"
    onnx.save(model, str(dst))
    np.testing.assert_allclose(_run_onnx(dst, 1), _run_onnx(src, 1), atol=1e-5)


def test_narrow_conv_as_shifted_sum_is_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 2, 3, padding=1), nn.Conv2d(2, 8, 3, padding=1)
    )
    src = tmp_path / "narrow.onnx"
    _export_tiny(layers, src, (1, 3, 8, 8))
    model, count = narrow_conv_to_shifted_sum(onnx.load(str(src)))
    assert count == 1  # only the 6 -> 2 convolution; 8 outputs is above the default limit
    dst = tmp_path / "shifted.onnx"
    onnx.save(model, str(dst))
    np.testing.assert_allclose(_run_onnx(dst, 1), _run_onnx(src, 1), atol=1e-5)


def test_pad_folded_into_conv_is_exact(tmp_path: Path) -> None:
    class PadConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(nn.functional.pad(x, (0, 1, 1, 2)))

    from onnxruntime.quantization import quant_pre_process

    raw, src = tmp_path / "raw.onnx", tmp_path / "pad.onnx"
    _export_tiny(PadConv(), raw, (1, 3, 8, 8))
    quant_pre_process(str(raw), str(src))  # folds the exporter's pad arithmetic to a constant, as in quantize_onnx
    model, count = fuse_pad_into_conv(onnx.load(str(src)))
    assert count == 1 and "Pad" not in [n.op_type for n in model.graph.node]
    dst = tmp_path / "fused.onnx"
    onnx.save(model, str(dst))
    np.testing.assert_allclose(_run_onnx(dst, 1), _run_onnx(src, 1), atol=1e-6)


# ---------------------------------------------------------------------------- backends


def test_every_backend_writes_a_model_that_runs(project: Params) -> None:
    test, golden = torch.rand(3, 3, SIZE, SIZE), torch.rand(3, 3, SIZE, SIZE)
    for key, name in QUANT_FILES.items():
        path = deploy_dir(project) / name
        assert path.is_file(), key
        model = load_torchao_model(path) if key == "torchao" else OnnxSegmentModel(path)
        with torch.no_grad():
            out = model(test, golden)
        out = out[-1] if isinstance(out, tuple) else out
        assert out.shape == (3, 2, SIZE, SIZE) and torch.isfinite(out).all(), key


def test_onnx_variants_are_int8_qdq_of_the_right_kind(project: Params) -> None:
    qdq = onnx.load(str(deploy_dir(project) / QUANT_FILES["onnxruntime"]))
    cpu = onnx.load(str(deploy_dir(project) / QUANT_FILES["onnxruntime_cpu"]))
    eight_bit = [
        t for t in qdq.graph.initializer if t.name.endswith("zero_point") and t.data_type != onnx.TensorProto.INT32
    ]
    assert eight_bit and all(t.data_type == onnx.TensorProto.INT8 for t in eight_bit)  # S8S8 (biases: int32)
    assert all(
        not np.any(onnx.numpy_helper.to_array(t)) for t in eight_bit
    )  # symmetric: TensorRT needs zero points of 0
    assert "ConvTranspose" in [n.op_type for n in qdq.graph.node]  # TensorRT keeps its INT8 deconvolution
    cpu_ops = [n.op_type for n in cpu.graph.node]
    assert "ConvTranspose" not in cpu_ops and "DepthToSpace" in cpu_ops and "Sum" in cpu_ops  # exact rewrites
    activations = [
        t for t in cpu.graph.initializer if t.name.endswith("zero_point") and t.data_type == onnx.TensorProto.UINT8
    ]
    assert activations  # U8 activations for onnxruntime's x86 kernels
    modelopt = onnx.load(str(deploy_dir(project) / QUANT_FILES["modelopt"]))
    for graph in (qdq.graph, cpu.graph, modelopt.graph):  # backbone float (weights from initializers), decoder INT8
        produced_by = {out: node.op_type for node in graph.node for out in node.output}
        convs = [n for n in graph.node if n.op_type == "Conv"]
        backbone = [n for n in convs if n.name.startswith("/model/backbone/")]
        decoder = [n for n in convs if n.name.startswith("/model/decoder/")]
        assert backbone and all(produced_by.get(n.input[1]) is None for n in backbone)
        assert decoder and all(produced_by.get(n.input[1]) == "DequantizeLinear" for n in decoder)
        assert "input0_QuantizeLinear" not in {n.name for n in graph.node}  # raw pixels are never quantized


def test_each_backend_is_evaluated_against_fp32(project: Params) -> None:
    metrics = json.loads((project.metrics_dir / "segment_quantize.json").read_text())
    assert "quantize/fp32/val_iou" in metrics
    shipped = json.loads(sidecar_path(fp32_onnx_path(project, "segment")).read_text())
    for key, name in QUANT_FILES.items():
        assert metrics[f"quantize/{key}/evaluated"] == 1.0
        assert f"quantize/{key}/val_iou" in metrics and f"quantize/{key}/iou_drop" in metrics
        drop = metrics[f"quantize/{key}/iou_drop"]
        within = metrics[f"quantize/{key}/within_tolerance"]
        assert within == float(drop is not None and drop <= project.quantize.iou_tolerance + 1e-12)
        sidecar = json.loads((deploy_dir(project) / name).with_suffix(".json").read_text())
        assert sidecar["promotable"] is bool(within) and sidecar["val"]["iou"] == metrics[f"quantize/{key}/val_iou"]
        assert sidecar["iou_tolerance"] == project.quantize.iou_tolerance
        # Judged at the image threshold the FP32 model ships with, not one re-chosen for the copy.
        assert sidecar["operating_threshold"] == pytest.approx(shipped["image_threshold"])
        assert sidecar["operating_threshold_from"] == "fp32"


def test_torchao_model_keeps_int8_weights_after_reload(project: Params) -> None:
    model = load_torchao_model(deploy_dir(project) / QUANT_FILES["torchao"])
    assert type(model.decoder.classifier.weight).__name__ == "IntxUnpackedToInt8Tensor"
    assert type(model.decoder.upsample[0].weight).__name__ == "Parameter"  # no torchao ConvTranspose kernel


def test_torchao_model_loads_in_a_fresh_process(project: Params) -> None:
    """A serving process has not imported torchao yet: loading must still pass ``weights_only``."""
    path = deploy_dir(project) / QUANT_FILES["torchao"]
    code = (
        "import sys; from components.quantization.torchao_ptq import load_torchao_model; "
        "m = load_torchao_model(sys.argv[1]); print(type(m.decoder.classifier.weight).__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("IntxUnpackedToInt8Tensor")


# ------------------------------------------------------------------ promotion verdict


def test_judge_flags_drops_beyond_tolerance() -> None:
    assert judge(0.80, 0.80, 0.0) == (0.0, True)
    drop, within = judge(0.79, 0.80, 0.005)
    assert math.isclose(drop, 0.01) and not within
    assert judge(0.81, 0.80, 0.0)[1]  # a gain is always within
    assert not judge(math.nan, 0.80, 0.5)[1]


def test_forced_drop_flips_the_flag_and_blocks_promotion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = make_project(tmp_path, quantize={"backends": ["torchao"], "iou_tolerance": 0.0, "calibration_samples": 2})
    from components.quantization import evaluate as evaluate_mod

    real = evaluate_mod.evaluate_runner
    calls: list[int] = []

    def fp32_looks_perfect(
        family: object, runner: object, p: Params, split: str = "val", threshold: float | None = None
    ) -> dict[str, float]:
        values = real(family, runner, p, split, threshold)  # type: ignore[arg-type]
        calls.append(1)
        return {**values, "iou": 1.0} if len(calls) == 1 else {**values, "iou": 0.5}

    monkeypatch.setattr(evaluate_mod, "evaluate_runner", fp32_looks_perfect)
    metrics = quantize_stage(params, "segment")
    assert metrics["quantize/torchao/iou_drop"] == pytest.approx(0.5)
    assert metrics["quantize/torchao/within_tolerance"] == 0.0
    sidecar = json.loads((deploy_dir(params) / "segment_torchao_int8wo.json").read_text())
    assert sidecar["promotable"] is False and sidecar["within_tolerance"] is False


def test_unevaluated_model_is_never_promotable(tmp_path: Path) -> None:
    model = tmp_path / "segment_modelopt_fp8.onnx"
    model.write_bytes(b"x")
    metrics = record_result("modelopt", model, {"seconds": 1.0}, None, 0.8, 0.5, skipped="FP8 needs TensorRT")
    assert metrics["quantize/modelopt/evaluated"] == 0.0 and metrics["quantize/modelopt/within_tolerance"] == 0.0
    assert "quantize/modelopt/val_iou" not in metrics
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["promotable"] is False and sidecar["skipped_reason"] == "FP8 needs TensorRT" and "val" not in sidecar


def test_single_backend_run_keeps_the_other_backends_numbers(project: Params) -> None:
    before = json.loads((project.metrics_dir / "segment_quantize.json").read_text())
    quantize_stage(project, "segment", backend="torchao")
    after = json.loads((project.metrics_dir / "segment_quantize.json").read_text())
    assert after["quantize/onnxruntime/val_iou"] == before["quantize/onnxruntime/val_iou"]
    assert after["quantize/modelopt/val_iou"] == before["quantize/modelopt/val_iou"]


def test_unknown_backend_and_missing_export_are_named(tmp_path: Path) -> None:
    params = make_project(tmp_path)
    with pytest.raises(DeployStageError, match="unknown quantization backend"):
        quantize_stage(params, "segment", backend="tensorrt")
    with pytest.raises(DeployStageError, match=r"segment_fp32\.onnx: FP32 ONNX model not found"):
        quantize_stage(params, "segment", backend="onnxruntime")


def test_modelopt_fp8_is_exported_but_not_evaluated_on_cpu(tmp_path: Path) -> None:
    params = make_project(
        tmp_path, quantize={"backends": ["modelopt"], "modelopt_format": "fp8", "calibration_samples": 2}
    )
    metrics = quantize_stage(params, "segment")
    path = deploy_dir(params) / "segment_modelopt_fp8.onnx"
    assert path.is_file()
    assert metrics["quantize/modelopt/evaluated"] == 0.0 and "quantize/modelopt/val_iou" not in metrics
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["precision"] == "fp8" and sidecar["promotable"] is False
    assert "TensorRT" in sidecar["skipped_reason"]
