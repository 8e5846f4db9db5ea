"""MAL's COCO box-crop dataset: items, augmentation, determinism, masks, errors, data module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from components.config import MalEvalParams, MalTrainParams
from components.imageio import read_image, write_png
from components.models.mal.crops import box_mask_in_crop, test_crop_box
from components.models.mal.data import BoxCropDataset, MalDataError, MalDataModule, collate

CROP = 64


# ----------------------------------------------------------------------------- synthetic data


def write_shapes_coco(
    root: Path,
    split: str,
    num_images: int,
    seed: int,
    size: int = 64,
    segmentation: bool = True,
    shape: str = "ellipse",
) -> Path:
    """Dark noisy images with one or two bright ellipses (or diamonds) each, and their COCO file.

    A diamond fills half of its box, so the filled-box baseline scores an IoU of about 0.5 on
    it (an ellipse: about 0.79), which leaves room to show that a model learnt the shape.

    ``root`` plays the datasets root: images go to ``segment/A/<split>_<i>.png`` and the JSON,
    with relative ``file_name`` as the project writes them, to ``coco/<split>.json``.
    """
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    yy, xx = np.mgrid[:size, :size]
    for index in range(num_images):
        image = rng.integers(10, 50, (size, size, 3)).astype(np.uint8)
        image_id = index + 1
        for _ in range(1 + index % 2):
            radii = rng.uniform(size * 0.12, size * 0.3, 2)
            centre = rng.uniform(radii + 1, size - radii - 1)
            dy, dx = np.abs(yy - centre[0]) / radii[0], np.abs(xx - centre[1]) / radii[1]
            mask = dy**2 + dx**2 <= 1.0 if shape == "ellipse" else dy + dx <= 1.0
            image[mask] = rng.integers(170, 256, 3).astype(np.uint8)
            ys, xs = np.nonzero(mask)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            annotation: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1 + len(annotations) % 2,
                "bbox": bbox,
                "area": int(mask.sum()),
                "iscrowd": 0,
            }
            if segmentation:
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                annotation["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
            annotations.append(annotation)
        file_name = f"segment/A/{split}_{index:03d}.png"
        write_png(root / file_name, image)
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "round"}, {"id": 2, "name": "oval"}],
    }
    path = root / "coco" / f"{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path


def edit_coco(path: Path, change: Any) -> Path:
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))
    return path


@pytest.fixture
def shapes(tmp_path: Path) -> tuple[Path, Path]:
    """``(datasets root, train.json)`` with 4 images / 6 ellipses."""
    return tmp_path, write_shapes_coco(tmp_path, "train", 4, seed=0)


def _dataset(root: Path, coco: Path, **kwargs: Any) -> BoxCropDataset:
    return BoxCropDataset(coco, root, CROP, **{"train": True, **kwargs})


# ------------------------------------------------------------------------------------- items


def test_training_item_contents(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    dataset = _dataset(root, coco, seed=3)
    assert len(dataset) == 6
    item = dataset[0]
    assert item["teacher"].shape == item["student"].shape == (3, CROP, CROP)
    assert item["teacher"].dtype == torch.float32
    assert item["teacher"].min() >= 0.0 and item["teacher"].max() <= 1.0
    assert item["box_mask"].shape == (1, CROP, CROP)
    assert item["crop_box"].shape == (4,) and item["crop_box"].dtype == torch.float32
    annotation = json.loads(coco.read_text())["annotations"][0]
    x, y, w, h = annotation["bbox"]
    assert item["box"].tolist() == [x, y, x + w, y + h]
    assert (item["ann_id"], item["image_id"], item["category_id"], item["category"]) == (1, 1, 1, "round")
    assert item["box_area"] == w * h
    assert "gt_mask" not in item
    # the crop contains the box, and the box mask is the box within it (flipped with the crop)
    crop = item["crop_box"]
    assert crop[0] <= x and crop[1] <= y and crop[2] >= x + w and crop[3] >= y + h
    expected = torch.from_numpy(box_mask_in_crop(item["box"].numpy(), crop.numpy(), CROP))
    expected = expected.flip(-1) if item["hflip"] else expected
    assert torch.allclose(item["box_mask"][0], expected)


def test_the_bright_object_lies_inside_the_box_mask(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    item = _dataset(root, coco, train=False)[0]
    bright = item["teacher"].mean(dim=0) > 0.5
    assert bright.any()
    assert item["box_mask"][0][bright].min() > 0.0


def test_augmentation_changes_the_student_only(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    always = _dataset(root, coco, hflip=0.0, color_jitter=1.0, grayscale=1.0, blur=1.0, seed=1)
    never = _dataset(root, coco, hflip=0.0, color_jitter=0.0, grayscale=0.0, blur=0.0, seed=1)
    changed, plain = always[2], never[2]
    assert torch.equal(changed["teacher"], plain["teacher"])  # same crop, teacher untouched
    assert torch.equal(plain["student"], plain["teacher"])
    assert not torch.allclose(changed["student"], changed["teacher"])
    grey = changed["student"]
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[1], grey[2])  # grayscale applied


def test_hflip_moves_both_views_and_the_box_mask(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    flipped = _dataset(root, coco, hflip=1.0, color_jitter=0.0, grayscale=0.0, blur=0.0, seed=2)[1]
    straight = _dataset(root, coco, hflip=0.0, color_jitter=0.0, grayscale=0.0, blur=0.0, seed=2)[1]
    assert flipped["hflip"] and not straight["hflip"]
    for key in ("teacher", "student", "box_mask"):
        assert torch.equal(flipped[key], straight[key].flip(-1))
    assert torch.equal(flipped["crop_box"], straight["crop_box"])  # image coordinates, unflipped


def test_items_are_deterministic_per_seed_epoch_and_index(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    first, second = _dataset(root, coco, seed=4), _dataset(root, coco, seed=4)
    a, b = first[(1, 3)], second[(1, 3)]
    for key in ("teacher", "student", "box_mask", "crop_box"):
        assert torch.equal(a[key], b[key])
    second.set_epoch(1)
    assert torch.equal(second[3]["crop_box"], a["crop_box"])  # bare index uses set_epoch's epoch
    assert not torch.equal(first[(2, 3)]["crop_box"], a["crop_box"])  # another epoch, another crop
    assert not torch.equal(_dataset(root, coco, seed=5)[(1, 3)]["crop_box"], a["crop_box"])


def test_evaluation_items_use_the_centred_test_crop_unaugmented(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    item = _dataset(root, coco, train=False, test_margin=0.6)[4]
    expected = test_crop_box(item["box"].numpy(), 0.6)
    assert np.allclose(item["crop_box"].numpy(), expected, atol=1e-4)
    assert torch.equal(item["student"], item["teacher"]) and not item["hflip"]


def test_masks_are_decoded_only_when_asked_and_match_the_drawing(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    item = _dataset(root, coco, train=False, load_masks=True)[0]
    mask = item["gt_mask"]
    assert mask.shape == (64, 64) and mask.dtype == torch.uint8
    x0, y0, x1, y1 = (int(v) for v in item["box"].tolist())
    ys, xs = np.nonzero(mask.numpy())
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    image = read_image(root / "segment" / "A" / "train_000.png")
    assert image[mask.numpy().astype(bool)].mean() > 150  # the mask covers the bright ellipse


def test_box_only_files_work_without_masks(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    edit_coco(coco, lambda c: [a.pop("segmentation") for a in c["annotations"]])
    assert _dataset(root, coco)[0]["teacher"].shape == (3, CROP, CROP)
    with pytest.raises(MalDataError, match=r"no usable box annotations .* without a segmentation"):
        _dataset(root, coco, load_masks=True)


def test_scoring_leaves_out_boxes_without_an_outline(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    edit_coco(coco, lambda c: c["annotations"][0].pop("segmentation"))
    full = _dataset(root, coco)
    scored = _dataset(root, coco, load_masks=True)
    assert scored.unscored == [1]
    assert len(scored) == len(full) - 1


def test_thin_boxes_are_skipped_and_counted(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    edit_coco(coco, lambda c: c["annotations"][0].update(bbox=[5, 5, 1.5, 20]))
    dataset = _dataset(root, coco, min_box_size=2)
    assert len(dataset) == 5 and dataset.skipped == 1
    assert 1 not in {instance.ann_id for instance in dataset.instances}


def test_collate_stacks_crops_and_lists_masks(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    dataset = _dataset(root, coco, train=False, load_masks=True)
    batch = collate([dataset[i] for i in range(3)])
    assert batch["teacher"].shape == (3, 3, CROP, CROP)
    assert batch["crop_box"].shape == (3, 4)
    assert batch["ann_id"].tolist() == [1, 2, 3]
    assert isinstance(batch["gt_mask"], list) and len(batch["gt_mask"]) == 3
    assert batch["category"] == ["round", "oval", "round"]


# ------------------------------------------------------------------------------------ errors


def test_missing_json_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MalDataError, match=r"missing\.json: COCO annotation file not found"):
        BoxCropDataset(tmp_path / "missing.json", tmp_path, CROP, train=True)


def test_missing_image_names_the_file_and_annotation(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    (root / "segment" / "A" / "train_001.png").unlink()
    with pytest.raises(MalDataError, match=r"train_001\.png \(annotation 2\)"):
        _dataset(root, coco)


def test_unreadable_image_names_the_file_and_annotation(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    (root / "segment" / "A" / "train_000.png").write_bytes(b"not a png")
    dataset = _dataset(root, coco)
    with pytest.raises(MalDataError, match=r"annotation 1: .*train_000\.png: cannot decode"):
        dataset[0]


def test_zero_area_box_names_the_annotation_and_file(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    edit_coco(coco, lambda c: c["annotations"][2].update(bbox=[10, 10, 0, 5]))
    with pytest.raises(MalDataError, match=r"train\.json: annotation 3 \(segment/A/train_001\.png\).*zero area"):
        _dataset(root, coco)


def test_box_outside_the_image_names_the_annotation_and_file(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    edit_coco(coco, lambda c: c["annotations"][1].update(bbox=[50, 10, 30, 10]))
    with pytest.raises(MalDataError, match=r"annotation 2 \(segment/A/train_001\.png\).*outside the 64x64 image"):
        _dataset(root, coco)


def test_box_within_a_pixel_of_the_border_is_clipped(shapes: tuple[Path, Path]) -> None:
    root, coco = shapes
    edit_coco(coco, lambda c: c["annotations"][1].update(bbox=[40, 10, 24.5, 10]))
    assert _dataset(root, coco).instances[1].box == (40.0, 10.0, 64.0, 20.0)


# ------------------------------------------------------------------------------- data module


def test_data_module_loaders(tmp_path: Path) -> None:
    train_json = write_shapes_coco(tmp_path, "train", 4, seed=0)
    val_json = write_shapes_coco(tmp_path, "val", 2, seed=1)
    edit_coco(train_json, lambda c: [a.pop("segmentation") for a in c["annotations"]])
    train = MalTrainParams(batch_size=4)
    module = MalDataModule(train_json, val_json, tmp_path, CROP, train, MalEvalParams(batch_size=2), seed=0)
    module.setup("fit")
    loader = module.train_dataloader()
    batch = next(iter(loader))
    assert batch["student"].shape == (4, 3, CROP, CROP) and "gt_mask" not in batch
    first_order = list(loader.sampler)
    loader.sampler.set_epoch(1)  # what Lightning does every epoch
    second_order = list(loader.sampler)
    assert {epoch for epoch, _ in second_order} == {1}  # items are keyed by the epoch
    assert [i for _, i in second_order] != [i for _, i in first_order]  # and reshuffled
    assert sorted(i for _, i in second_order) == list(range(6))
    val = next(iter(module.val_dataloader()))
    assert len(val["gt_mask"]) == 2 and val["gt_mask"][0].shape == (64, 64)
    # val boxes join training only when asked, and never with their masks
    both = MalDataModule(
        train_json, val_json, tmp_path, CROP, train.model_copy(update={"use_val_boxes": True}), {}, seed=0
    )
    both.setup("fit")
    assert len(both.train_set) == len(module.train_set) + 3
    assert "gt_mask" not in both.train_set[(0, len(both.train_set) - 1)]
