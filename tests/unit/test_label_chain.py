"""The label-efficient chain: ChangeNet trains on MAL's masks of the train split, never on val's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from components.cli import app
from components.config import parse_params
from components.labeling.pipeline import mal_mask_dir
from components.models.changenet.data import ChangeSegmentDataset
from tests.conftest import tiny_params_dict

SIZE = 32


def _segment_split(root: Path, split: str, names: list[str]) -> None:
    segment = root / "segment"
    for kind in ("A", "B", "label", "list"):
        (segment / kind).mkdir(parents=True, exist_ok=True)
    for name in names:
        image = np.full((SIZE, SIZE, 3), 90, dtype=np.uint8)
        Image.fromarray(image).save(segment / "A" / f"{name}.png")
        Image.fromarray(image).save(segment / "B" / f"{name}.png")
        true = np.zeros((SIZE, SIZE), dtype=np.uint8)
        true[4:12, 4:12] = 255
        Image.fromarray(true).save(segment / "label" / f"{name}.png")
    (segment / "list" / f"{split}.txt").write_text("".join(f"{n}.png\n" for n in names))


def test_segment_trains_on_mal_masks_and_is_judged_on_true_ones(tmp_path: Path) -> None:
    from components.models.family import get_family

    still = {"hflip": 0.0, "random_resized_crop": 0.0, "blur": 0.0, "color_jitter": 0.0}
    params = parse_params(tiny_params_dict(tmp_path, segment={"train": {"labels": "mal", "augment": still}}))
    _segment_split(params.datasets_dir, "train", ["bent_lead_test_000"])
    _segment_split(params.datasets_dir, "val", ["bent_lead_test_001"])
    labels = mal_mask_dir(params)
    labels.mkdir(parents=True)
    mal = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mal[20:30, 20:30] = 255  # MAL's mask: somewhere else than the painted one
    Image.fromarray(mal).save(labels / "bent_lead_test_000.png")

    datamodule = get_family("segment").build_datamodule(params)
    datamodule.setup("fit")
    train_mask = datamodule.train_set[0]["mask"].numpy()
    assert train_mask[25, 25] == 1 and train_mask[8, 8] == 0
    val_mask = datamodule.val_set[0]["mask"].numpy()
    assert val_mask[8, 8] == 1 and val_mask[25, 25] == 0


def test_missing_mal_masks_are_named_before_training(tmp_path: Path) -> None:
    from components.models.changenet.data import SegmentDataError

    _segment_split(tmp_path, "train", ["a", "b"])
    with pytest.raises(SegmentDataError, match=r"mal/masks/a\.png"):
        ChangeSegmentDataset(tmp_path, "train", mask_dir=tmp_path / "mal" / "masks")


def test_label_cli_names_a_bad_box_before_loading_any_model(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((SIZE, SIZE, 3), dtype=np.uint8)).save(images / "part.png")
    coco = {
        "images": [{"id": 1, "file_name": "part.png", "height": SIZE, "width": SIZE}],
        "annotations": [{"id": 41, "image_id": 1, "category_id": 1, "bbox": [20, 20, 30, 5]}],
        "categories": [{"id": 1, "name": "scratch"}],
    }
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    params_path = tmp_path / "params.yaml"
    import yaml

    params_path.write_text(yaml.safe_dump(tiny_params_dict(tmp_path)))
    out = tmp_path / "labelled.json"
    args = ["label", "mal", "--coco", str(tmp_path / "boxes.json"), "--images", str(images), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--params", str(params_path)])
    assert result.exit_code == 1
    assert "41" in result.output and "part.png" in result.output
    assert not out.exists()
