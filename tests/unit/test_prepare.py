"""Dataset preparation end to end on a tiny fake MVTec category written in ``tmp_path``.

The fake category: 64 px noise images (distinct per sample, so a wrong pairing shows),
20 train/good, 6 test/good, ``scratch`` with one known rectangle per mask and ``spots``
with two separate rectangles per mask; prepared at 32 px.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from components.config import LIGHTING_CONDITIONS, Params, parse_params
from components.data.coco import (
    _encode_local,
    _label_bfs,
    _label_scipy,
    bbox_xywh,
    category_ids,
    connected_regions,
    encode_rle,
)
from components.data.formats import (
    CLASSIFY_COLUMNS,
    DatasetLayout,
    classify_image_path,
    golden_image_paths,
    read_segment_list,
)
from components.data.prepare import LightingError, prepare_datasets
from components.imageio import ImageReadError

RAW_SIZE, SIZE = 64, 32
SCRATCH = (8, 16, 24, 40)  # x0, y0, x1, y1 (exclusive) in raw pixels; even so 64 -> 32 halves it exactly
SPOTS = ((4, 4, 12, 12), (40, 40, 56, 60))
N_TRAIN_GOOD, N_TEST_GOOD, N_PER_DEFECT = 20, 6, 4


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (RAW_SIZE, RAW_SIZE, 3), dtype=np.uint8)


def _mask(rects: tuple[tuple[int, int, int, int], ...]) -> np.ndarray:
    mask = np.zeros((RAW_SIZE, RAW_SIZE), dtype=np.uint8)
    for x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = 255
    return mask


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_category(root: Path, lights: tuple[str, ...] = ()) -> Path:
    """Write a fake MVTec category (optionally with a ``lights/`` tree) and return its folder."""
    files: list[tuple[str, str, str]] = [("train", "good", f"{i:03d}") for i in range(N_TRAIN_GOOD)]
    files += [("test", "good", f"{i:03d}") for i in range(N_TEST_GOOD)]
    files += [("test", kind, f"{i:03d}") for kind in ("scratch", "spots") for i in range(N_PER_DEFECT)]
    for seed, (split, label, stem) in enumerate(files):
        _save(root / split / label / f"{stem}.png", _noise(seed))
        for offset, light in enumerate(lights, start=1):
            _save(root / "lights" / light / split / label / f"{stem}.png", _noise(1000 * offset + seed))
        if label != "good":
            rects = (SCRATCH,) if label == "scratch" else SPOTS
            _save(root / "ground_truth" / label / f"{stem}_mask.png", _mask(rects))
    return root


def make_params(tmp_path: Path, **data: Any) -> Params:
    raw: dict[str, Any] = {
        "seed": 3,
        "paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "artifacts")},
        "data": {"source": "mvtec", "category": "widget", "image_size": SIZE, "lighting_conditions": ["UniformLight"]},
    }
    raw["data"].update(data)
    return parse_params(raw)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, dict[str, int]]:
    tmp_path = tmp_path_factory.mktemp("prepared")
    params = make_params(tmp_path)
    make_category(params.raw_category_dir)
    return params, prepare_datasets(params)


def _layout(params: Params) -> DatasetLayout:
    return DatasetLayout(params.datasets_dir)


def _manifest(params: Params) -> dict[str, Any]:
    return json.loads((params.datasets_dir / "split.json").read_text())


# ---------------------------------------------------------------- segmentation


def test_summary_counts(prepared: tuple[Params, dict[str, int]]) -> None:
    _, summary = prepared
    # golden floor(0.05*20)=1; good 19+6=25 -> val round(7.5)=8; each defect 4 -> val 1.
    assert summary["segment/golden_pool"] == 1
    assert (summary["segment/train"], summary["segment/val"], summary["segment/test"]) == (23, 10, 0)
    assert (summary["segment/val/good"], summary["segment/val/scratch"], summary["segment/val/spots"]) == (8, 1, 1)
    assert summary["segment/val_defect"] == 2 and summary["segment/train_defect"] == 6
    assert summary["classify/train_rows"] == 23 and summary["classify/val_rows"] == 10
    assert summary["classify/images"] == 2 * 33  # one light: input + golden per row
    # scratch: one region per mask, spots: two.
    assert summary["coco/train_annotations"] == 3 * 1 + 3 * 2
    assert summary["coco/val_annotations"] == 1 + 2
    assert all(isinstance(v, int) for v in summary.values())


def test_lists_exist_in_every_folder_and_exclude_goldens(prepared: tuple[Params, dict[str, int]]) -> None:
    params, _ = prepared
    layout = _layout(params)
    golden = {g["name"] for g in _manifest(params)["golden_pool"]}
    assert not layout.segment_list("test").exists()
    listed: list[str] = []
    for split in ("train", "val"):
        lines = layout.segment_list(split).read_text().splitlines()
        assert lines == sorted(lines) and all(line.endswith(".png") for line in lines)
        names = read_segment_list(layout.segment_list(split))
        listed += names
        for name in names:
            for kind in ("A", "B", "label"):
                assert layout.segment_image(kind, name).is_file()
    assert golden and golden.isdisjoint(listed)
    assert len(listed) == len(set(listed)) == 33


def test_images_are_resized_and_b_is_the_golden(prepared: tuple[Params, dict[str, int]]) -> None:
    params, _ = prepared
    layout, raw = _layout(params), params.raw_category_dir
    manifest = _manifest(params)
    golden_image = {g["name"]: g["image"] for g in manifest["golden_pool"]}
    for sample in manifest["samples"][:5]:
        a = Image.open(layout.segment_image("A", sample["name"]))
        b = Image.open(layout.segment_image("B", sample["name"]))
        assert a.size == b.size == (SIZE, SIZE) and a.mode == b.mode == "RGB"
        expected_a = Image.open(raw / sample["image"]).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        expected_b = Image.open(raw / golden_image[sample["goldens"][0]]).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        assert np.array_equal(np.asarray(a), np.asarray(expected_a))
        assert np.array_equal(np.asarray(b), np.asarray(expected_b))


def test_labels_are_binary_and_match_the_resized_mask(prepared: tuple[Params, dict[str, int]]) -> None:
    params, _ = prepared
    layout, raw = _layout(params), params.raw_category_dir
    for sample in _manifest(params)["samples"]:
        label = Image.open(layout.segment_image("label", sample["name"]))
        assert label.mode == "L" and label.size == (SIZE, SIZE)
        pixels = np.asarray(label)
        assert set(np.unique(pixels)) <= {0, 255}
        if sample["label"] == "good":
            assert pixels.max() == 0
            continue
        stem = Path(sample["image"]).stem
        mask = Image.open(raw / "ground_truth" / sample["label"] / f"{stem}_mask.png")
        expected = np.asarray(mask.resize((SIZE, SIZE), Image.Resampling.NEAREST)) > 127
        assert np.array_equal(pixels > 0, expected)


def test_same_params_give_identical_bytes(tmp_path: Path, prepared: tuple[Params, dict[str, int]]) -> None:
    params, _ = prepared
    again = make_params(tmp_path)
    make_category(again.raw_category_dir)
    prepare_datasets(again)
    assert tree_digest(again.datasets_dir) == tree_digest(params.datasets_dir)


# ---------------------------------------------------------------- classification


def _rows(params: Params, split: str) -> tuple[list[str], list[dict[str, str]]]:
    with _layout(params).classify_csv(split).open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_classify_csv_columns_labels_and_files(prepared: tuple[Params, dict[str, int]]) -> None:
    params, _ = prepared
    images = _layout(params).classify_images
    for split in ("train", "val"):
        columns, rows = _rows(params, split)
        assert tuple(columns) == CLASSIFY_COLUMNS
        assert [r["object_name"] for r in rows] == read_segment_list(_layout(params).segment_list(split))
        for row in rows:
            assert row["label"] == (
                "PASS" if row["object_name"].startswith("good_") else row["object_name"].split("_")[0]
            )
            assert classify_image_path(images, row["input_path"], row["object_name"], "UniformLight").is_file()
            (golden,) = golden_image_paths(images, row["golden_path"], row["object_name"], "UniformLight", 1)
            assert golden.is_file()


def test_every_light_comes_from_the_lights_tree(tmp_path: Path) -> None:
    params = make_params(tmp_path, lighting_conditions=list(LIGHTING_CONDITIONS), num_golden=2, golden_fraction=0.1)
    make_category(params.raw_category_dir, lights=LIGHTING_CONDITIONS)
    summary = prepare_datasets(params)
    images = _layout(params).classify_images
    _, rows = _rows(params, "train")
    row = rows[0]
    golden_names = next(s["goldens"] for s in _manifest(params)["samples"] if s["name"] == row["object_name"])
    golden_stems = [name.rsplit("_", 1)[1] for name in golden_names]
    for light in LIGHTING_CONDITIONS:
        for r in rows:
            assert classify_image_path(images, r["input_path"], r["object_name"], light).is_file()
        goldens = golden_image_paths(images, row["golden_path"], row["object_name"], light, 2)
        assert len(goldens) == 2 and all(p.is_file() for p in goldens)
        for path, stem in zip(goldens, golden_stems, strict=True):
            source = params.raw_category_dir / "lights" / light / "train" / "good" / f"{stem}.png"
            expected = Image.open(source).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
            assert np.array_equal(np.asarray(Image.open(path)), np.asarray(expected))
    # golden_fraction 0.1 of 20 -> a pool of 2, so 32 rows; 4 lights x (input + 2 goldens) each.
    assert summary["classify/train_rows"] + summary["classify/val_rows"] == 32
    assert summary["classify/images"] == 32 * 4 * (1 + 2)


def test_several_lights_without_a_lights_tree_is_an_error(tmp_path: Path) -> None:
    params = make_params(tmp_path, lighting_conditions=["UniformLight", "SolderLight"])
    make_category(params.raw_category_dir)
    with pytest.raises(LightingError, match=r"'UniformLight'.*category 'widget'"):
        prepare_datasets(params)
    assert not params.datasets_dir.exists()


# ---------------------------------------------------------------- COCO


def test_coco_instances(prepared: tuple[Params, dict[str, int]]) -> None:
    mask_utils = pytest.importorskip("pycocotools.mask")
    params, _ = prepared
    layout = _layout(params)
    coco = json.loads(layout.coco_json("train").read_text())
    assert coco["categories"] == [
        {"id": 1, "name": "scratch", "supercategory": "defect"},
        {"id": 2, "name": "spots", "supercategory": "defect"},
    ]
    assert [im["id"] for im in coco["images"]] == list(range(1, 24))
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image in coco["images"]:
        name = Path(image["file_name"]).stem
        assert (layout.root / image["file_name"]).is_file() and image["file_name"] == f"segment/A/{name}.png"
        anns = by_image.get(image["id"], [])
        label = np.asarray(Image.open(layout.segment_image("label", name))) > 0
        assert len(anns) == {"good": 0, "scratch": 1, "spots": 2}[name.split("_")[0]]
        union = np.zeros_like(label)
        for ann in anns:
            assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
            region = mask_utils.decode({**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()})
            assert ann["area"] == int(region.sum())
            union |= region.astype(bool)
        assert np.array_equal(union, label)
        if name.startswith("scratch"):
            assert anns[0]["bbox"] == [4, 8, 8, 12] and anns[0]["category_id"] == 1


def test_connected_regions_are_8_connected_and_skip_crumbs() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[3, 3] = True  # touches the block diagonally: same region
    mask[7:9, 5:9] = True  # 8 px
    mask[0, 9] = True  # 1 px crumb
    regions, skipped = connected_regions(mask, min_area=4)
    assert skipped == 1
    assert [int(r.sum()) for r in regions] == [5, 8]
    assert [bbox_xywh(r) for r in regions] == [[1, 1, 3, 3], [5, 7, 4, 2]]


def test_bfs_fallback_labels_like_scipy() -> None:
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    for _ in range(20):
        mask = rng.random((20, 17)) < 0.35
        scipy_result = _label_scipy(mask)
        assert scipy_result is not None
        labels, count = _label_bfs(mask)
        assert count == scipy_result[1] and np.array_equal(labels, scipy_result[0])


def test_local_rle_matches_pycocotools() -> None:
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        mask = rng.random((height, width)) < rng.random()
        assert _encode_local(mask) == encode_rle(mask)


def test_category_ids_are_sorted_from_one() -> None:
    assert category_ids(["b", "a", "c"]) == {"a": 1, "b": 2, "c": 3}


# ---------------------------------------------------------------- failures


def test_corrupt_image_names_it_and_keeps_previous_datasets(tmp_path: Path) -> None:
    params = make_params(tmp_path)
    make_category(params.raw_category_dir)
    prepare_datasets(params)
    before = tree_digest(params.datasets_dir)
    corrupt = params.raw_category_dir / "test" / "good" / "002.png"
    corrupt.write_bytes(corrupt.read_bytes()[:60])
    with pytest.raises(ImageReadError, match=re.escape(str(corrupt))):
        prepare_datasets(params)
    assert tree_digest(params.datasets_dir) == before
    assert sorted(p.name for p in params.paths.artifacts_dir.iterdir()) == ["datasets"]  # no staging left


def test_a_full_disk_during_prepare_keeps_the_previous_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #31: the disk fills while ``data prepare`` rewrites the datasets (after a few images)."""
    import errno

    import typer

    from components.cli import _friendly_errors

    params = make_params(tmp_path, workers=1)  # in this process, where the fault is injected
    make_category(params.raw_category_dir)
    prepare_datasets(params)
    before = tree_digest(params.datasets_dir)

    real_save, saved = Image.Image.save, []

    def filling_up(self: Image.Image, *args: Any, **kwargs: Any) -> None:
        if len(saved) >= 5:
            raise OSError(errno.ENOSPC, "No space left on device")  # as PIL raises it: no file name
        saved.append(args[0])
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", filling_up)
    with pytest.raises(OSError) as full:
        prepare_datasets(params)
    assert full.value.errno == errno.ENOSPC and str(full.value.filename).endswith(".png")
    assert tree_digest(params.datasets_dir) == before  # the previous datasets, byte for byte
    leftovers = [p.name for p in params.datasets_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the half-written staging folder is gone

    with pytest.raises(typer.Exit), _friendly_errors():  # what `inspectops data prepare` prints
        raise full.value
    message = capsys.readouterr().err
    assert f"no space left on the disk writing {full.value.filename}" in message and "unchanged" in message
