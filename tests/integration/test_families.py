"""The family contract: every registered model family goes through every shared stage on tiny data.

One parametrized test per stage chain (anomalib's and timm's habit): a family that cannot be
built, trained, evaluated, exported with parity, quantized or registered through the interface
fails here, whatever its own unit tests say.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from components.config import Params, load_params
from components.evaluation.stage import metrics_path
from components.export.stage import export_stage, fp32_onnx_path, quantize_metrics_path, quantize_stage
from components.models.family import FAMILY_MODULES, ModelFamily, best_checkpoint, get_family
from components.registry import candidate_path, register_model
from components.training.runs import training_run
from components.training.train import train_metrics_path, train_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def params(prepared_project: Path) -> Params:
    return load_params(prepared_project)


@pytest.mark.parametrize("name", sorted(FAMILY_MODULES))
def test_every_family_trains_with_the_training_seed(params: Params, name: str) -> None:
    family = get_family(name)
    assert family.build_datamodule(params).seed == params.seed  # train_seed: null
    varied = params.model_copy(update={"train_seed": params.seed + 1})
    assert family.build_datamodule(varied).seed == params.seed + 1


def test_a_training_seed_reorders_training_but_keeps_the_split(params: Params) -> None:
    family = get_family("segment")
    modules = [family.build_datamodule(params.model_copy(update={"train_seed": s})) for s in (1, 2)]
    for module in modules:
        module.setup("fit")
    orders = [list(module.train_dataloader().sampler) for module in modules]
    assert orders[0] != orders[1]
    names = [[module.val_dataloader().dataset[i]["name"] for i in range(3)] for module in modules]
    assert names[0] == names[1]


@pytest.mark.parametrize("name", sorted(FAMILY_MODULES))
def test_every_family_trains_evaluates_exports_quantizes_and_registers(params: Params, name: str) -> None:
    from components.evaluation.stage import evaluate_stage

    family = get_family(name)
    assert isinstance(family, ModelFamily)
    trained = train_model(params, family)
    best_key = f"train/best_{family.monitor.replace('/', '_')}"
    assert trained[best_key] == trained[best_key]  # a number, not nan: the monitor was logged
    assert json.loads(train_metrics_path(params, family).read_text())[best_key] == pytest.approx(trained[best_key])
    assert best_checkpoint(params, family).is_file()

    evaluated = evaluate_stage(params, family, splits=("val",))
    gate = f"val/{family.gate_metric}"
    assert 0.0 <= evaluated[gate] <= 1.0
    assert json.loads(metrics_path(params, family).read_text())[gate] == pytest.approx(evaluated[gate])

    exported = export_stage(params, family)
    assert exported["export/parity_equal_pixels"] >= params.export.parity_min_equal_pixels
    sidecar = json.loads(fp32_onnx_path(params, family).with_suffix(".json").read_text())
    assert sidecar["input_names"] == list(family.onnx_input_names) and sidecar["family"] == name

    quantized = quantize_stage(params, family, backend="onnxruntime")
    assert quantized[f"quantize/fp32/val_{family.gate_metric}"] == pytest.approx(evaluated[gate], abs=1e-6)
    assert "quantize/onnxruntime_cpu/iou_drop" in json.loads(quantize_metrics_path(params, family).read_text())

    registered = register_model(params, family)
    assert registered["register/version"] >= 1
    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    version = mlflow.MlflowClient().get_model_version(
        family.registered_model(params), str(int(registered["register/version"]))
    )
    assert version.run_id == training_run(params, family)["run_id"]
    assert json.loads(candidate_path(params, family).read_text())["gate_metric"] == family.gate_metric
