"""Issue #27: template/test pairs with boxes only run MAL's chain into segmentation, stage by stage.

MAL learns from the train boxes and labels them, ChangeNet-Segmentation trains on MAL's masks
(``segment.train.labels: mal``) and is judged against MAL's masks of the val boxes, flagged as such;
MAL's evaluation gives box-only measures; with ``labels: masks`` the boxed pairs stay out of
segmentation training.

(``tests/integration/test_import_then_run.py`` runs the look-alikes through the whole flow, and checks
there what a change-detection set without good pairs and a four-light CSV must show.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from components.config import Params, load_params
from components.data.formats import DatasetLayout, read_segment_list
from components.data.importer import import_source
from components.data.lookalikes.formats import (
    Lookalike,
    write_boxes_only_pairs,
)
from components.labeling.pipeline import mal_mask_dir, mal_pseudo_mask_dir
from components.pipeline import steps
from tests.conftest import write_params
from tests.integration.conftest import TINY_SEGMENT

pytestmark = pytest.mark.slow

ONE_EPOCH = {**TINY_SEGMENT, "train": {**TINY_SEGMENT["train"], "epochs": 1, "defect_share": None}}


def _imported(tmp_path: Path, written: Lookalike, lights: list[str], **sections: Any) -> Params:
    data = {"source": written.format, "category": "look", "image_size": 64, "lighting_conditions": lights}
    params = load_params(write_params(tmp_path / "project", data=data, **sections))
    found = import_source(written.format, written.root, "look", params.paths.data_dir / written.format, written.options)
    assert found["records"] == written.records
    steps.prepare(params)
    assert steps.validate(params)["validation/success"] == 1.0
    return params


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def test_boxes_only_pairs_chain_mal_masks_into_segmentation(tmp_path: Path) -> None:
    written = write_boxes_only_pairs(tmp_path / "pcb", n_defect=14, n_good=6)
    segment = {**ONE_EPOCH, "train": {**ONE_EPOCH["train"], "labels": "mal"}}
    params = _imported(tmp_path, written, ["UniformLight"], segment=segment)
    layout = DatasetLayout(params.datasets_dir)
    boxed = {name for name, boxes in written.boxes.items() if boxes}
    apart = {s: set(read_segment_list(layout.segment_boxes_only_list(s))) for s in ("train", "val")}
    assert apart["train"] | apart["val"] == boxed and apart["val"]

    mal_train = steps.train(params, "mal")
    assert math.isnan(mal_train["train/best_val_miou"])  # no true outline: no val mIoU, last epoch kept
    mal = steps.evaluate(params, "mal")
    assert "val/miou" not in mal and mal["val/unscored_instances"] == mal["val/box/instances"] > 0
    assert 0.0 <= mal["val/box/projection_iou"] <= 1.0 and 0.0 <= mal["val/box/fill"] <= 1.0

    labelled = steps.label_mal(params)
    assert labelled["label/annotations"] > 0 and labelled["label/val_boxes_only_pairs"] == len(apart["val"])
    train_names = set(read_segment_list(layout.segment_list("train"))) | apart["train"]
    assert {p.stem for p in mal_mask_dir(params).glob("*.png")} == train_names
    assert {p.stem for p in mal_pseudo_mask_dir(params, "val").glob("*.png")} == apart["val"]

    trained = steps.train(params, "segment")
    assert _finite(trained["train/best_val_iou"])
    metrics = steps.evaluate(params, "segment")
    assert _finite(metrics["val/iou"]) and _finite(metrics["val/image_auroc"])
    assert metrics["val/truth/mal_pseudo_pairs"] == len(apart["val"])  # judged against MAL pseudo-masks
    assert _finite(metrics["val/mal_pseudo/iou"])
    assert steps.register(params, "mal")["register/promoted"] == 0.0  # no val mIoU: never champion


def test_boxes_only_pairs_stay_out_of_painted_mask_training(tmp_path: Path) -> None:
    from components.models.changenet.data import SegmentDataModule
    from components.models.family import get_family

    written = write_boxes_only_pairs(tmp_path / "pcb", n_defect=8, n_good=6)
    params = _imported(tmp_path, written, ["UniformLight"], segment=ONE_EPOCH)  # labels: masks
    module = get_family("segment").build_datamodule(params)
    assert isinstance(module, SegmentDataModule)
    module.setup("fit")
    assert module.train_set is not None and not module.train_set.pseudo_names
    assert not any(module.train_set.has_change())  # only known-good pairs; the boxed ones are left out
