from pathlib import Path

import pytest
import yaml

from components.config import ParamsError, load_params, parse_params
from tests.conftest import REPO_ROOT


def test_repository_params_are_valid() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.source == "synthetic"
    assert params.data.category == "transistor"
    assert params.raw_category_dir == Path("data/synthetic/transistor")


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"data": {"source": "kaggle"}}, "data.source", "synthetic"),
        ({"data": {"image_size": -3}}, "data.image_size", "greater than or equal"),
        ({"data": {"lighting_conditions": ["Sunlight"]}}, "data.lighting_conditions", "UniformLight"),
        ({"data": {"val_fraction": 0.6, "test_fraction": 0.5}}, "data", "below 1.0"),
        ({"segment": {"train": {"optimizer": "lbfgs"}}}, "segment.train.optimizer", "adamw"),
        ({"data": {"imagesize": 128}}, "data.imagesize", "Extra inputs"),
        ({"segment": {"model": {"pretrained": "path"}}}, "segment.model", "pretrained_backbone_path"),
        ({"mal": {"boxes": "drawn"}}, "mal.boxes", "'annotated' or 'cam'"),
        ({"mal": {"boxes": "cam", "train": {"use_val_boxes": True}}}, "mal", "use_val_boxes"),
    ],
)
def test_bad_values_name_the_key(raw: dict, key: str, hint: str) -> None:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw, "params.yaml")
    message = str(caught.value)
    assert f"- {key}" in message
    assert hint in message


def test_load_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(scalar)


def test_overrides_use_dotted_keys(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"image_size": 128}}))
    params = load_params(path, {"data.image_size": 64, "segment.train.epochs": 2})
    assert params.data.image_size == 64
    assert params.segment.train.epochs == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"data": {"lighting_conditions": ["UniformLight"]}, "classify": {"model": {"concat_type": "grid"}}},
            "grid_map 2x2 must hold exactly the 1 lighting condition",
        ),
        ({"classify": {"eval": {"threshold_split": "test"}}}, "threshold_split: test needs data.test_fraction > 0"),
        ({"classify": {"input_size": 100}}, "classify.input_size"),
        ({"classify": {"model": {"difference_module": "cosine"}}}, "classify.model.difference_module"),
        ({"classify": {"eval": {"threshold": "best"}}}, "classify.eval.threshold"),
    ],
)
def test_classify_settings_that_do_not_fit_are_refused(raw: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_training_seed_defaults_to_the_data_seed_and_can_vary_alone() -> None:
    default = parse_params({"seed": 7})
    assert default.train_seed is None and default.training_seed == 7
    varied = parse_params({"seed": 7, "train_seed": 3})
    assert varied.training_seed == 3 and varied.seed == 7  # the split's seed is untouched
    with pytest.raises(ParamsError, match="- train_seed"):
        parse_params({"train_seed": -1}, "params.yaml")
