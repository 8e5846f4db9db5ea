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


def test_image_labels_alone_chain_to_changenet_masks(params: Params) -> None:
    """mal.boxes: cam: MAL learns from and labels the CAM boxes; ChangeNet's masks follow (no drawn region)."""
    from components.data.formats import DatasetLayout, read_segment_list
    from components.labeling.cam_boxes import cam_boxes_path, label_cam_stage
    from components.labeling.pipeline import label_stage, mal_mask_dir, mal_train_boxes

    # A fixed threshold of 0 calls every image anomalous, so the tiny classifier boxes every train image
    cam = params.cam.model_copy(update={"eval": params.cam.eval.model_copy(update={"threshold": 0.0})})
    chain = params.model_copy(update={"mal": params.mal.model_copy(update={"boxes": "cam"}), "cam": cam})
    train_model(chain, get_family("cam"))
    boxes = label_cam_stage(chain)
    assert mal_train_boxes(chain) == cam_boxes_path(chain) and cam_boxes_path(chain).is_file()
    assert boxes["label/images"] == len(read_segment_list(DatasetLayout(chain.datasets_dir).segment_list("train")))
    assert 0.0 <= boxes["label/good_boxed"] <= 1.0 and 0.0 <= boxes["label/defect_recall"] <= 1.0
    assert json.loads((chain.metrics_dir / "cam_label.json").read_text()) == pytest.approx(boxes)
    assert boxes["label/anomalous"] == boxes["label/images"] and boxes["label/boxes"] > 0
    train_model(chain, get_family("mal"))
    labelled = label_stage(chain)
    assert labelled["label/annotations"] == boxes["label/boxes"]
    assert "label/train_miou" not in labelled  # CAM boxes match no drawn annotation by id
    assert 0.0 <= labelled["label/train_image_iou"] <= 1.0
    written = sorted(p.stem for p in mal_mask_dir(chain).glob("*.png"))
    assert written == sorted(read_segment_list(DatasetLayout(chain.datasets_dir).segment_list("train")))
