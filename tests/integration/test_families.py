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
import yaml

from components.config import Params, parse_params
from components.evaluation.calibration import HasParts
from components.evaluation.stage import metrics_path
from components.export.stage import export_stage, fp32_onnx_path, quantize_metrics_path, quantize_stage
from components.models.family import FAMILY_MODULES, ModelFamily, best_checkpoint, get_family
from components.registry import DEPLOYABLE_PATH, candidate_path, describe_version, register_model
from components.serving.bundle import chosen_int8, serves
from components.serving.infer import resolve_bundle
from components.serving.runtime import DeployBundle
from components.training.runs import training_run
from components.training.train import train_metrics_path, train_model

pytestmark = pytest.mark.slow


THRESHOLD_SPLIT = {"segment": "image_threshold_split", "classify": "threshold_split", "cam": "threshold_split"}
"""The families that ship an operating threshold, and the key that says where it is chosen."""


@pytest.fixture(scope="module")
def params(prepared_project: Path) -> Params:
    """The tiny project, with a fifth of train held out as calibration parts for every shipped threshold."""
    raw = yaml.safe_load(prepared_project.read_text())
    raw["data"]["calibration_fraction"] = 0.2
    for family, key in THRESHOLD_SPLIT.items():
        raw.setdefault(family, {}).setdefault("eval", {})[key] = "calibration"
    return parse_params(raw)


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
    if name in THRESHOLD_SPLIT:  # the shipped threshold was chosen on parts training never saw, and says so
        assert sidecar["threshold_split"] == "calibration" and sidecar["threshold_on_unseen_parts"] is True
        assert sidecar["calibration_fraction"] == 0.2
        assert version.tags["threshold_split"] == "calibration"
        assert float(version.tags["image_threshold" if name == "segment" else "threshold"]) == pytest.approx(
            sidecar["image_threshold" if name == "segment" else "threshold"]
        )
    if serves(family):  # the version is the deployable ONNX bundle, with its card
        assert version.source.endswith(DEPLOYABLE_PATH)
        for section in ("## Overview and intended use", "## Training data", "## Metrics (val)", "## Lineage"):
            assert section in version.description
        assert f"v{version.version}" in describe_version(f"{version.name}/{version.version}")
        bundle = DeployBundle(resolve_bundle(f"models:/{version.name}/{version.version}"))
        assert bundle.precision == ("int8" if chosen_int8(params, family) else "fp32")
        assert bundle.threshold == pytest.approx(sidecar["image_threshold" if name == "segment" else "threshold"])
        assert "## How to run it" in (bundle.folder / "card.md").read_text()


@pytest.mark.parametrize("name", sorted(THRESHOLD_SPLIT))
def test_calibration_parts_are_held_out_of_training(params: Params, name: str) -> None:
    from components.evaluation.calibration import CALIBRATION

    family = get_family(name)
    module = family.build_datamodule(params)
    module.setup("fit")
    trained_on = set(module.train_dataloader().dataset.part_names())
    calibration = family_split(name, params, CALIBRATION)
    everything = family_split(name, params, "train")
    held = set(calibration.part_names())
    assert held and not held & trained_on
    assert held | trained_on == set(everything.part_names())
    assert any(calibration.part_defects()) and not all(calibration.part_defects())


def family_split(name: str, params: Params, split: str) -> HasParts:
    """A split as each family's evaluation opens it (``calibration`` included)."""
    if name == "segment":
        from components.models.changenet.data import open_split

        return open_split(params, split)
    if name == "classify":
        from components.models.changenet_classify.evaluate import dataset_for as classify_split

        return classify_split(params, split)
    from components.models.cam.evaluate import dataset_for as cam_split

    return cam_split(params, split)
