"""Mask auto-labeler: box COCO in, RLE masks out, with a fake predictor and tiny PNGs written here.

The fake predictor returns, for each box, a rectangle that reaches 2 px past the box on
every side (so the writer's clipping to the box is visible), and the masks and boxes it
saw, so the tests can compare the written RLE with exactly what it returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from components.data.coco import encode_rle
from components.labeling import (
    BoxJob,
    LabelingError,
    annotation_mask,
    decode_rle,
    encode_mask,
    label_coco,
    load_box_job,
    validate_labels,
)
from components.labeling.coco_boxes import EDGE_TOLERANCE_PX

# (height, width) per image file; c.png has no annotation.
IMAGES = {1: ("a.png", 32, 48), 2: ("sub/b.png", 40, 40), 3: ("c.png", 24, 32)}
# id -> (image_id, bbox xywh); integer boxes, so the pixels of a box are plain slices.
BOXES = {
    11: (1, [4, 6, 10, 8]),
    12: (1, [30, 0, 18, 32]),  # touches the right and bottom edges
    13: (2, [0, 0, 5, 5]),  # touches the top-left corner
    14: (2, [20, 10, 6, 12]),  # the fake predictor returns an empty mask for this one
    15: (1, [0, 20, 8, 6]),
}
EMPTY_FOR = 14
OVERSHOOT = 2


def _write_png(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")


def _document() -> dict[str, Any]:
    return {
        "info": {"description": "boxes only"},
        "licenses": [],
        "categories": [{"id": 1, "name": "scratch", "supercategory": "defect"}],
        "images": [{"id": i, "file_name": f, "height": h, "width": w} for i, (f, h, w) in IMAGES.items()],
        "annotations": [
            {"id": a, "image_id": i, "category_id": 1, "bbox": list(b), "area": b[2] * b[3], "reviewer": "kim"}
            for a, (i, b) in BOXES.items()
        ],
    }


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``(coco_json, images_dir)`` of a sound box-only dataset."""
    images_dir = tmp_path / "images"
    for image_id, (name, height, width) in IMAGES.items():
        _write_png(images_dir / name, height, width, image_id)
    coco_json = tmp_path / "boxes.json"
    coco_json.write_text(json.dumps(_document()))
    return coco_json, images_dir


def _rewrite(coco_json: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads(coco_json.read_text())
    change(document)
    coco_json.write_text(json.dumps(document))


class FakePredictor:
    """Rectangles 2 px larger than each box, score 0.5 + 0.01 * call index; remembers what it returned."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.returned: list[tuple[np.ndarray, list[np.ndarray], list[float]]] = []

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert boxes.dtype.kind == "f" and boxes.shape[1] == 4
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise RuntimeError("predictor crashed")
        height, width = image.shape[:2]
        masks, scores = [], []
        for x1, y1, x2, y2 in boxes:
            mask = np.zeros((height, width), dtype=bool)
            top, left = max(int(y1) - OVERSHOOT, 0), max(int(x1) - OVERSHOOT, 0)
            mask[top : int(y2) + OVERSHOOT, left : int(x2) + OVERSHOOT] = True
            masks.append(mask)
            scores.append(0.5 + 0.01 * len(scores))
        self.returned.append((boxes.copy(), masks, scores))
        return masks, scores


class EmptyingPredictor(FakePredictor):
    """The fake predictor, but the mask of annotation :data:`EMPTY_FOR`'s box is empty."""

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        masks, scores = super().__call__(image, boxes)
        x, y, w, h = BOXES[EMPTY_FOR][1]
        for index, box in enumerate(boxes):
            if list(box) == [x, y, x + w, y + h]:
                masks[index][:] = False
        return masks, scores


def _expected_masks(predictor: FakePredictor, job: BoxJob) -> dict[int, np.ndarray]:
    """What the predictor returned, cleared outside each (integer) box."""
    expected = {}
    for task, (_, masks, _) in zip(job.images, predictor.returned, strict=True):
        for annotation, mask in zip(task.annotations, masks, strict=True):
            x, y, w, h = annotation["bbox"]
            clipped = np.zeros_like(mask)
            clipped[y : y + h, x : x + w] = mask[y : y + h, x : x + w]
            expected[annotation["id"]] = clipped
    return expected


# --------------------------------------------------------------------------- RLE


def test_rle_round_trip_matches_the_dataset_encoder() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((height, width)) < rng.random()
        rle = encode_mask(mask)
        assert rle == encode_rle(mask)
        assert isinstance(rle["counts"], str) and rle["size"] == [height, width]
        np.testing.assert_array_equal(decode_rle(rle), mask)


def test_decode_rle_rejects_runs_that_do_not_fill_the_size() -> None:
    rle = encode_mask(np.ones((4, 5), dtype=bool))
    with pytest.raises(LabelingError, match="cover 20 pixels"):
        decode_rle({"size": [40, 50], "counts": rle["counts"]})
    with pytest.raises(LabelingError, match="alphabet"):
        decode_rle({"size": [4, 5], "counts": "~~~ not rle"})
    uncompressed = decode_rle({"size": [2, 3], "counts": [1, 4, 1]})
    np.testing.assert_array_equal(uncompressed, np.array([[0, 1, 1], [1, 1, 0]], dtype=bool))


def test_annotation_mask_reads_polygons_and_rle() -> None:
    square = {"id": 1, "segmentation": [[2, 2, 8, 2, 8, 6, 2, 6]]}
    mask = annotation_mask(square, 10, 12)
    assert mask.shape == (10, 12) and mask[3:6, 3:8].all() and not mask[:, 10:].any()
    rle = {"id": 2, "segmentation": encode_mask(mask)}
    np.testing.assert_array_equal(annotation_mask(rle, 10, 12), mask)
    with pytest.raises(LabelingError, match="annotation 2: RLE size 10x12"):
        annotation_mask(rle, 20, 12)


# --------------------------------------------------------------------------- writing


def test_label_coco_writes_the_clipped_masks_and_their_pixel_area(tree: tuple[Path, Path], tmp_path: Path) -> None:
    coco_json, images_dir = tree
    _rewrite(coco_json, lambda d: d["annotations"][0].update(segmentation=[[0, 0, 1, 0, 1, 1]]))
    job = load_box_job(coco_json, images_dir)
    predictor = EmptyingPredictor()
    out_path = tmp_path / "out" / "masks.json"

    summary = label_coco(job, predictor, out_path, progress=False)

    assert predictor.calls == 2  # c.png has no box and is never opened
    written = json.loads(out_path.read_text())
    assert [a["id"] for a in written["annotations"]] == list(BOXES)  # input order
    assert written["images"] == _document()["images"] and written["info"] == _document()["info"]
    expected = _expected_masks(predictor, job)
    for annotation in written["annotations"]:
        mask = decode_rle(annotation["segmentation"])
        np.testing.assert_array_equal(mask, expected[annotation["id"]])
        assert annotation["area"] == int(mask.sum())  # the mask's, not the box's
        assert annotation["bbox"] == BOXES[annotation["id"]][1]
        assert (annotation["iscrowd"], annotation["source"], annotation["reviewer"]) == (0, "mal", "kim")
        assert 0.0 <= annotation["score"] <= 1.0
    assert expected[EMPTY_FOR].sum() == 0 and expected[11].sum() == 10 * 8  # the 2 px overshoot is gone
    assert (summary.images, summary.annotations, summary.empty_masks) == (2, 5, 1)
    scores = [s for _, _, batch in predictor.returned for s in batch]
    assert summary.mean_score == pytest.approx(np.mean(scores))
    assert summary.seconds >= 0 and summary.out_path == out_path


def test_boxes_within_the_edge_tolerance_are_clipped(tree: tuple[Path, Path], tmp_path: Path) -> None:
    coco_json, images_dir = tree
    over = EDGE_TOLERANCE_PX - 0.25
    _rewrite(coco_json, lambda d: d["annotations"][1].update(bbox=[30.5, -over, 17.5 + over, 32 + 2 * over]))
    job = load_box_job(coco_json, images_dir)
    predictor = FakePredictor()
    label_coco(job, predictor, tmp_path / "out.json", progress=False)
    boxes = predictor.returned[0][0]
    np.testing.assert_allclose(boxes[1], [30.5, 0.0, 48.0, 32.0])  # a.png is 48 wide, 32 high
    assert validate_labels(tmp_path / "out.json", images_dir).success


def test_a_failing_predictor_leaves_no_output(tree: tuple[Path, Path], tmp_path: Path) -> None:
    coco_json, images_dir = tree
    job = load_box_job(coco_json, images_dir)
    fresh = tmp_path / "fresh" / "masks.json"
    with pytest.raises(RuntimeError, match="predictor crashed"):
        label_coco(job, FakePredictor(fail_on_call=2), fresh, progress=False)
    assert not fresh.exists()

    existing = tmp_path / "masks.json"
    existing.write_text('{"old": true}\n')
    with pytest.raises(RuntimeError, match="predictor crashed"):
        label_coco(job, FakePredictor(fail_on_call=2), existing, progress=False)
    assert existing.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in existing.parent.iterdir() if p.name.startswith(".")) == []  # no temp files


def test_a_predictor_breaking_its_contract_is_a_labeling_error(tree: tuple[Path, Path], tmp_path: Path) -> None:
    coco_json, images_dir = tree
    job = load_box_job(coco_json, images_dir)

    def wrong_size(image: np.ndarray, boxes: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        return [np.ones((8, 8), dtype=bool) for _ in boxes], [0.5] * len(boxes)

    with pytest.raises(LabelingError, match=r"a\.png: predictor, annotation 11: mask shape \(8, 8\)"):
        label_coco(job, wrong_size, tmp_path / "out.json", progress=False)
    assert not (tmp_path / "out.json").exists()


# --------------------------------------------------------------------------- the GX check


@pytest.fixture
def labelled(tree: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """``(masks_json, images_dir)``: the tree labelled by the fake predictor."""
    coco_json, images_dir = tree
    out_path = tmp_path / "masks.json"
    label_coco(load_box_job(coco_json, images_dir), FakePredictor(), out_path, progress=False)
    return out_path, images_dir


def test_check_passes_on_a_written_file(labelled: tuple[Path, Path]) -> None:
    out_path, images_dir = labelled
    result = validate_labels(out_path, images_dir)
    assert result.success, [str(f) for f in result.failures]
    assert result.annotations == len(BOXES)
    result.raise_for_failures()


def test_check_names_the_annotation_with_a_wrong_size_rle(labelled: tuple[Path, Path]) -> None:
    out_path, images_dir = labelled

    def shrink(document: dict[str, Any]) -> None:
        annotation = document["annotations"][2]  # id 13 on the 40x40 sub/b.png
        small = np.zeros((20, 40), dtype=bool)
        small[0:5, 0:5] = True
        annotation["segmentation"] = encode_mask(small)

    _rewrite(out_path, shrink)
    result = validate_labels(out_path, images_dir)
    assert not result.success and result.failing_ann_ids == [13]
    assert any("rle_height" in f.columns for f in result.failures)
    with pytest.raises(LabelingError, match=r"annotation 13 \(.*sub/b\.png\): rle_height=20, image_height=40"):
        result.raise_for_failures()


def test_check_names_the_annotation_with_mask_pixels_outside_its_box(labelled: tuple[Path, Path]) -> None:
    out_path, images_dir = labelled

    def leak(document: dict[str, Any]) -> None:
        annotation = document["annotations"][0]  # id 11, box [4, 6, 10, 8] on the 32x48 a.png
        mask = decode_rle(annotation["segmentation"])
        mask[0:2, 40:48] = True
        annotation["segmentation"] = encode_mask(mask)
        annotation["area"] = int(mask.sum())

    _rewrite(out_path, leak)
    result = validate_labels(out_path, images_dir)
    assert result.failing_ann_ids == [11]
    assert [f.columns for f in result.failures] == [("outside_box_pixels",)]
    with pytest.raises(LabelingError, match=r"annotation 11 \(.*a\.png\): outside_box_pixels=16"):
        result.raise_for_failures()


def test_check_catches_box_area_duplicates_and_bad_scores(labelled: tuple[Path, Path]) -> None:
    out_path, images_dir = labelled

    def damage(document: dict[str, Any]) -> None:
        annotations = document["annotations"]
        annotations[0]["area"] = 10 * 8 + 1  # TAO-style box area
        annotations[1]["score"] = 1.5
        annotations[3]["id"] = annotations[4]["id"]

    _rewrite(out_path, damage)
    result = validate_labels(out_path, images_dir)
    failed = {f.columns: f.ann_ids for f in result.failures}
    assert failed == {("area", "mask_area"): (11,), ("score",): (12,), ("ann_id",): (15, 15)}


# --------------------------------------------------------------------------- bad input


def _set_bbox(ann_index: int, bbox: list[float]) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["annotations"][ann_index].update(bbox=bbox)


BAD_INPUTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "box outside the image": (_set_bbox(0, [40, 6, 10, 8]), r"annotation 11 \(.*a\.png\): bbox .* outside the 48x32"),
    "box past the tolerance": (
        _set_bbox(1, [30, 0, 18 + EDGE_TOLERANCE_PX + 0.01, 32]),
        r"annotation 12 \(.*a\.png\): bbox .* outside",
    ),
    "zero-area box": (_set_bbox(2, [1, 1, 0, 4]), r"annotation 13 \(.*sub/b\.png\): bbox .* zero or negative area"),
    "negative box": (_set_bbox(3, [20, 10, 6, -2]), r"annotation 14 \(.*sub/b\.png\): bbox .* zero or negative area"),
    "malformed box": (_set_bbox(4, [0, 20, 8]), r"annotation 15 \(.*a\.png\): bbox must be 4 numbers"),
    "unknown image_id": (
        lambda d: d["annotations"][4].update(image_id=99),
        r"annotation 15: image_id 99 is not in 'images'",
    ),
    "duplicate annotation id": (
        lambda d: d["annotations"][3].update(id=11),
        r"annotation 11 \(.*sub/b\.png\): duplicate annotation id \(annotations\[0\] and \[3\]\)",
    ),
    "missing key": (
        lambda d: d["annotations"][2].pop("bbox"),
        r"annotation 13 \(.*sub/b\.png\): missing key\(s\) bbox",
    ),
    "size differs from the json": (
        lambda d: d["images"][1].update(height=41),
        r"annotation\(s\) 13, 14 on image 2 \(.*sub/b\.png\): image is 40x40, the JSON says 40x41",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_json_content_is_reported_with_annotation_and_file(tree: tuple[Path, Path], case: str) -> None:
    coco_json, images_dir = tree
    change, pattern = BAD_INPUTS[case]
    _rewrite(coco_json, change)
    with pytest.raises(LabelingError, match=pattern) as caught:
        load_box_job(coco_json, images_dir)
    assert str(coco_json) in str(caught.value)


def test_a_missing_image_file_is_reported(tree: tuple[Path, Path]) -> None:
    coco_json, images_dir = tree
    (images_dir / "sub" / "b.png").unlink()
    with pytest.raises(
        LabelingError, match=r"annotation\(s\) 13, 14 on image 2 \(.*sub/b\.png\): image file not found"
    ):
        load_box_job(coco_json, images_dir)


def test_a_corrupt_image_is_reported(tree: tuple[Path, Path]) -> None:
    coco_json, images_dir = tree
    path = images_dir / "a.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still reads; only a full decode fails
    with pytest.raises(
        LabelingError, match=r"annotation\(s\) 11, 12, 15 on image 1 \(.*a\.png\): image cannot be decoded"
    ):
        load_box_job(coco_json, images_dir)


def test_a_missing_or_broken_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(LabelingError, match=r"nothing\.json: COCO file not found"):
        load_box_job(tmp_path / "nothing.json", tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(LabelingError, match=r"broken\.json: cannot read as JSON"):
        load_box_job(broken, tmp_path)
    broken.write_text('{"images": []}')
    with pytest.raises(LabelingError, match=r"top-level 'annotations' must be a list"):
        load_box_job(broken, tmp_path)


def test_all_problems_are_reported_together(tree: tuple[Path, Path]) -> None:
    coco_json, images_dir = tree

    def break_several(document: dict[str, Any]) -> None:
        document["annotations"][0]["bbox"] = [100, 0, 5, 5]
        document["annotations"][2]["image_id"] = 42
        document["annotations"][4]["id"] = 12

    _rewrite(coco_json, break_several)
    (images_dir / "sub" / "b.png").unlink()
    with pytest.raises(LabelingError) as caught:
        load_box_job(coco_json, images_dir)
    message = str(caught.value)
    assert "4 problem(s)" in message
    for fragment in ("annotation 11 (", "annotation 13: image_id 42", "annotation 12 (", "annotation(s) 14 on image 2"):
        assert fragment in message
