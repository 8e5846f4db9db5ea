"""ONNX export of ChangeNet-Segmentation: one self-contained file, TAO names, dynamic batch, parity."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

from components.config import ExportParams, Params, SegmentModelParams, SegmentTrainParams, parse_params
from components.export import ExportError, OnnxSegmentModel, export_segment_onnx, parity_pairs_from_dataset
from components.export.stage import export_stage, fp32_onnx_path
from components.export.static_padding import freeze_same_padding
from components.models.changenet.data import ChangeSegmentDataset
from components.models.changenet.model import ONNX_INPUT_NAMES, ONNX_OUTPUT_NAMES, ChangeNetSegment
from components.models.changenet.module import ChangeSegmentModule
from tests.conftest import tiny_params_dict

SIZE = 64
TINY_MODEL = {"backbone": "tf_efficientnet_lite0", "pretrained": "none", "embed_dim": 16}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared CPU: one thread avoids OpenMP spin-waiting (5x slower exports)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ helpers


def _write_pairs(segment: Path, split: str, names: list[str], rng: np.random.Generator) -> None:
    for kind in ("A", "B", "label", "list"):
        (segment / kind).mkdir(parents=True, exist_ok=True)
    for name in names:
        golden = rng.integers(30, 120, (SIZE, SIZE, 3), dtype=np.uint8)
        test = golden.copy()
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        if not name.startswith("good"):
            top, left = rng.integers(4, SIZE - 20, 2)
            test[top : top + 14, left : left + 14] = 230
            mask[top : top + 14, left : left + 14] = 255
        Image.fromarray(test).save(segment / "A" / f"{name}.png")
        Image.fromarray(golden).save(segment / "B" / f"{name}.png")
        Image.fromarray(mask).save(segment / "label" / f"{name}.png")
    (segment / "list" / f"{split}.txt").write_text("".join(f"{n}.png\n" for n in names))


def make_project(root: Path, **sections: object) -> Params:
    """Params over a tiny TAO-layout dataset (64x64) and a random tiny ChangeNet checkpoint."""
    params = parse_params(
        tiny_params_dict(root, segment={"model": dict(TINY_MODEL), "eval": {"batch_size": 4}}, **sections)
    )
    rng = np.random.default_rng(0)
    segment = params.datasets_dir / "segment"
    _write_pairs(segment, "train", [f"bent_lead_test_{i:03d}" for i in range(5)] + ["good_train_000"], rng)
    _write_pairs(
        segment, "val", ["cut_lead_test_000", "bent_lead_test_100", "good_train_100", "misplaced_test_000"], rng
    )
    torch.manual_seed(0)
    module = ChangeSegmentModule(
        model=SegmentModelParams.model_validate(TINY_MODEL).model_dump(mode="json"),
        train=SegmentTrainParams().model_dump(mode="json"),
    )
    checkpoint = params.paths.artifacts_dir / "models" / "segment" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    return params


def _tiny_model() -> ChangeNetSegment:
    torch.manual_seed(0)
    return ChangeNetSegment(**TINY_MODEL).eval()  # type: ignore[arg-type]


def _pairs(count: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(count, 3, SIZE, SIZE, generator=generator), torch.rand(count, 3, SIZE, SIZE, generator=generator)


# -------------------------------------------------------------------------------- tests


def test_export_is_one_file_with_tao_names_and_dynamic_batch(tmp_path: Path) -> None:
    model = _tiny_model()
    out = tmp_path / "deploy" / "model.onnx"
    metrics = export_segment_onnx(model, out, ExportParams(), SIZE, _pairs())

    assert set(metrics) == {
        "export/parity_max_abs_logit",
        "export/parity_equal_pixels",
        "export/size_mb",
        "export/opset",
    }
    assert metrics["export/parity_max_abs_logit"] <= 1e-3 and metrics["export/parity_equal_pixels"] >= 0.999
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.json", "model.onnx"]  # no .data side file
    proto = onnx.load(str(out), load_external_data=False)
    onnx.checker.check_model(proto)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert [i.name for i in proto.graph.input] == list(ONNX_INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == ["output_final"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert proto.opset_import[0].version == 17

    onnx_model = OnnxSegmentModel(out)
    for batch in (1, 3):
        test, golden = _pairs(batch)
        want = model(test, golden)[-1]
        got = onnx_model(test, golden)
        assert got.shape == (batch, 2, SIZE, SIZE)
        assert torch.allclose(got, want, atol=1e-4)

    sidecar = json.loads((out.parent / "model.json").read_text())
    assert sidecar["input_names"] == ["input0", "input1"] and sidecar["output_names"] == ["output_final"]
    assert sidecar["image_size"] == [SIZE, SIZE] and sidecar["export/opset"] == 17.0
    assert sidecar["static_padding_layers"] == 5  # tf_efficientnet_lite0's stride-2 SAME convolutions


def test_side_outputs_are_exported_with_tao_names(tmp_path: Path) -> None:
    out = tmp_path / "side.onnx"
    export_segment_onnx(_tiny_model(), out, ExportParams(side_outputs=True, parity_samples=2), SIZE, _pairs(2))
    outputs = OnnxSegmentModel(out, all_outputs=True)
    assert tuple(outputs.output_names) == ONNX_OUTPUT_NAMES
    assert outputs(*_pairs(1))[-1].shape == (1, 2, SIZE, SIZE)


class _DriftsAfterTracing(nn.Module):
    """Adds a Python-side call counter: tracing bakes in one value, later calls differ (a real export bug class)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        *side, final = self.model(test, golden)
        return (*side, final + float(self.calls))


def test_parity_failure_raises_and_leaves_no_model(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an older export")  # must not survive a failed export either
    out.with_suffix(".json").write_text("{}")
    with pytest.raises(ExportError, match=r"model\.onnx: onnxruntime does not match PyTorch"):
        export_segment_onnx(_DriftsAfterTracing(_tiny_model()), out, ExportParams(parity_samples=2), SIZE, _pairs(2))
    assert list(tmp_path.iterdir()) == []


def test_parity_thresholds_come_from_params(tmp_path: Path) -> None:
    strict = ExportParams(parity_max_abs_logit=1e-12, parity_min_equal_pixels=1.0)
    model = _DriftsAfterTracing(_tiny_model())  # a 1.0 logit shift: fails any threshold below 1
    loose = ExportParams(parity_max_abs_logit=5.0, parity_min_equal_pixels=0.001)
    export_segment_onnx(model, tmp_path / "loose.onnx", loose, SIZE, _pairs(1))
    with pytest.raises(ExportError, match="allowed 1e-12"):
        export_segment_onnx(model, tmp_path / "strict.onnx", strict, SIZE, _pairs(1))
    assert not (tmp_path / "strict.onnx").exists()


def test_wrong_parity_pairs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"model\.onnx: parity pairs must be two \(N, 3, 64, 64\) stacks"):
        export_segment_onnx(
            _tiny_model(), tmp_path / "model.onnx", ExportParams(), SIZE, (torch.rand(1, 3, 32, 32),) * 2
        )


def test_frozen_same_padding_is_exact_and_leaves_no_shape_arithmetic(tmp_path: Path) -> None:
    model = _tiny_model()
    test, golden = _pairs(2)
    frozen, layers = freeze_same_padding(model, (test, golden))
    assert layers == 5
    assert torch.equal(frozen(test, golden)[-1], model(test, golden)[-1])
    out = tmp_path / "model.onnx"
    export_segment_onnx(model, out, ExportParams(parity_samples=2), SIZE, (test, golden))
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert "Ceil" not in ops  # the dynamic SAME-padding arithmetic is gone


def test_export_stage_writes_model_sidecar_and_metrics(tmp_path: Path) -> None:
    params = make_project(tmp_path, export={"parity_samples": 3})
    metrics = export_stage(params, "segment")
    model_path = fp32_onnx_path(params, "segment")
    assert model_path.is_file()
    assert json.loads((params.metrics_dir / "segment_export.json").read_text()) == pytest.approx(metrics)
    sidecar = json.loads(model_path.with_suffix(".json").read_text())
    assert sidecar["checkpoint"].endswith("best.ckpt") and sidecar["parity_pairs"] == 3
    val = ChangeSegmentDataset(params.datasets_dir, "val")
    test, golden = parity_pairs_from_dataset(val, 4)
    assert OnnxSegmentModel(model_path)(test, golden).shape == (4, 2, SIZE, SIZE)
