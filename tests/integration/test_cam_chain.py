"""Image labels -> CAM boxes -> COCO that the mask auto-labeler reads (issue #13's chain, first link)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.config import Params, load_params
from components.labeling.cam_boxes import label_cam
from components.models.family import get_family
from components.models.mal.data import BoxCropDataset
from components.training.train import train_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def params(prepared_project: Path) -> Params:
    return load_params(prepared_project)


def test_cam_boxes_are_coco_that_mal_reads(params: Params, tmp_path: Path) -> None:
    train_model(params, get_family("cam"))
    out = tmp_path / "cam_boxes.json"
    summary = label_cam(params, "train", out)
    coco = json.loads(out.read_text())
    assert summary.images == len(coco["images"]) > 0
    assert summary.boxes == len(coco["annotations"])
    size = params.data.image_size
    for annotation in coco["annotations"]:
        x, y, w, h = annotation["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= size and y + h <= size
        assert summary.threshold <= annotation["score"] <= 1.0
    for image in coco["images"]:
        assert (params.datasets_dir / image["file_name"]).is_file()
    if coco["annotations"]:
        crops = BoxCropDataset(out, params.datasets_dir, 32, train=False)
        assert len(crops) == len(coco["annotations"])
