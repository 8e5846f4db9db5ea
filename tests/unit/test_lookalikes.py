"""The look-alike generators (components.data.lookalikes.formats) write what the source readers read,
and prepare keeps boxes-only pairs out of the segmentation lists, in a list of their own (issue #27)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from components.config import Params, parse_params
from components.data.formats import DatasetLayout, read_segment_list
from components.data.lookalikes.formats import (
    FOUR_LIGHTS,
    write_boxes_only_pairs,
    write_change_detection,
    write_four_light_csv,
)
from components.data.prepare import prepare_datasets
from components.data.sources.options import SourceOptions
from components.data.sources.pairs import read_pairs
from components.data.sources.tao_classify import read_tao_classify
from components.data.sources.tao_segment import read_tao_segment
from components.models.mal.evaluate import box_agreement
from tests.source_fixtures import write_options


def _params(tmp_path: Path, source: str, **data: Any) -> Params:
    raw: dict[str, Any] = {
        "seed": 3,
        "paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "artifacts")},
        "data": {"source": source, "category": "look", "image_size": 32, "lighting_conditions": ["UniformLight"]},
    }
    raw["data"].update(data)
    return parse_params(raw)


def test_change_detection_reads_as_tao_segment_with_change_everywhere(tmp_path: Path) -> None:
    written = write_change_detection(tmp_path / "levir", n_train=5, n_val=3)
    index = read_tao_segment(written.root, SourceOptions())
    assert {r.name: r.split for r in index.records} == written.splits
    assert written.counts == {"records": 8, "good": 0, "defect": 8, "boxes": 0, "masks": 8}
    assert index.lights == () and written.lights == ()
    for record in index.records:
        with Image.open(record.image) as image:
            assert image.size == written.size == (96, 80)  # not square
        mask = np.asarray(Image.open(record.mask)) > 127
        assert mask.any() and np.array_equal(mask, written.masks[record.name])
        test, golden = np.asarray(Image.open(record.image), float), np.asarray(Image.open(record.golden), float)
        assert np.abs(test - golden)[mask].mean() > 4 * np.abs(test - golden)[~mask].mean()  # visible change


def test_boxes_only_pairs_read_with_their_import_options(tmp_path: Path) -> None:
    written = write_boxes_only_pairs(tmp_path / "pcb", n_defect=6, n_good=4)
    assert written.format == "pairs" and written.options.box_separator == " " and written.options.mask_pattern is None
    assert written.import_args[-2:] == ("--box-separator", " ")
    assert list((written.root / "group00041" / "00041").glob("*_temp.jpg"))
    index = read_pairs(written.root, written.options)
    assert sorted(r.name for r in index.records) == written.names()
    assert all(r.split is None for r in index.records)
    by_name = {r.name: r for r in index.records}
    empty_files = 0
    for name, boxes in written.boxes.items():
        record = by_name[name]
        assert record.mask is None
        assert [(i.box.x1, i.box.y1, i.box.x2, i.box.y2, i.box.label) for i in record.instances] == boxes
        assert record.label == written.labels[name]
        assert record.masked == (not boxes)  # boxes without a mask: pixels unknown
        box_file = written.root / "group00041" / "00041_not" / f"{name}.txt"
        empty_files += int(not boxes and box_file.is_file() and box_file.read_text() == "")
        for x1, y1, x2, y2, label in boxes:
            assert label.startswith("class_") and 1 <= int(label.removeprefix("class_")) <= 6
            with Image.open(record.image) as image:
                inside = np.asarray(image.convert("L"))[y1:y2, x1:x2]
            assert inside.max() > 200  # the bright defect lies in its box
    assert written.counts["good"] == 4 and empty_files >= 1
    assert set(index.classes) == set(written.classes)


def test_four_light_csv_reads_as_tao_classify(tmp_path: Path) -> None:
    written = write_four_light_csv(tmp_path / "aoi", n_train=6, n_val=4)
    index = read_tao_classify(written.root, SourceOptions())
    assert index.lights == FOUR_LIGHTS == written.lights
    assert {r.name: r.split for r in index.records} == written.splits
    assert {r.name: r.label for r in index.records} == written.labels
    assert {"good", "missing", "shifted"} == set(written.labels.values())
    assert all(len(r.golden_lights) == 1 and len(r.lights) == 4 for r in index.records)


@pytest.fixture
def boxes_only(tmp_path: Path) -> tuple[Params, Any]:
    params = _params(tmp_path, "pairs", val_fraction=0.4)
    written = write_boxes_only_pairs(params.raw_category_dir, n_defect=6, n_good=4)
    write_options(params.raw_category_dir, "pairs", written.options)  # what `data import` leaves
    return params, written


def test_prepare_lists_boxes_only_pairs_apart(boxes_only: tuple[Params, Any]) -> None:
    params, written = boxes_only
    summary = prepare_datasets(params)
    layout = DatasetLayout(params.datasets_dir)
    listed = {s: read_segment_list(layout.segment_list(s)) for s in ("train", "val")}
    apart = {s: read_segment_list(layout.segment_boxes_only_list(s)) for s in ("train", "val")}
    boxed = {n for n, b in written.boxes.items() if b}
    assert set(apart["train"]) | set(apart["val"]) == boxed and apart["train"] and apart["val"]
    assert not boxed & (set(listed["train"]) | set(listed["val"]))  # never taught as all-clear
    assert summary["segment/boxes_only"] == summary["segment/unlabelled"] == len(boxed)
    for name in boxed:
        assert layout.segment_image("A", name).is_file() and layout.segment_image("B", name).is_file()
        assert not layout.segment_image("label", name).is_file()


def test_segment_dataset_takes_boxes_only_pairs_with_pseudo_masks(boxes_only: tuple[Params, Any]) -> None:
    from components.models.changenet.data import ChangeSegmentDataset

    params, _ = boxes_only
    prepare_datasets(params)
    layout = DatasetLayout(params.datasets_dir)
    painted = ChangeSegmentDataset(params.datasets_dir, "train")
    assert not painted.pseudo_names and painted.names == read_segment_list(layout.segment_list("train"))
    pseudo = params.paths.artifacts_dir / "pseudo"
    pseudo.mkdir(parents=True)
    for name in read_segment_list(layout.segment_boxes_only_list("train")):
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(pseudo / f"{name}.png")
    joined = ChangeSegmentDataset(params.datasets_dir, "train", pseudo_mask_dir=pseudo)
    assert joined.pseudo_names == set(read_segment_list(layout.segment_boxes_only_list("train")))
    assert len(joined) == len(painted) + len(joined.pseudo_names)
    flags = dict(zip(joined.names, joined.has_change(), strict=True))
    assert all(flags[name] for name in joined.pseudo_names)


def test_box_agreement() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:10, 4:12] = True
    assert box_agreement(mask, np.array([4, 5, 12, 10])) == (1.0, 1.0)  # the filled box
    projection, fill = box_agreement(mask, np.array([4, 5, 16, 10]))
    assert projection == pytest.approx((8 / 12 + 1.0) / 2) and fill == pytest.approx(40 / 60)
    assert box_agreement(np.zeros((20, 20), dtype=bool), np.array([4, 5, 12, 10])) == (0.0, 0.0)
