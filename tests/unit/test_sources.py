"""Source formats end to end: each reader on a tiny dataset of its format, then prepare.

The datasets come from :mod:`tests.source_fixtures` (seeded noise, non-square images,
known masks and boxes); prepare runs at 32 px. The tests check values, not just shapes:
splits are the source's, labels come from the masks, boxes are scaled into the prepared
size, and a parallel prepare writes the same bytes as a serial one.
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

from components.config import Params, parse_params
from components.data.formats import DatasetLayout, classify_image_path, golden_image_paths, read_segment_list
from components.data.prepare import MANIFEST, LightingError, prepare_datasets, prepared_datasets, worker_count
from components.data.sources import SourceError, read_source
from components.data.sources.coco import read_coco
from components.data.sources.common import assign_splits
from components.data.sources.options import SourceOptions, load_options
from components.data.sources.pairs import read_pairs
from components.data.sources.records import Record
from components.data.sources.tao_classify import read_tao_classify
from components.data.sources.tao_segment import read_tao_segment
from components.data.split import class_split_sizes
from components.imageio import ImageReadError
from tests.source_fixtures import (
    Written,
    noise,
    save,
    write_coco,
    write_options,
    write_pairs,
    write_tao_classify,
    write_tao_segment,
)

SIZE = 32
mask_utils = pytest.importorskip("pycocotools.mask")


def source_params(tmp_path: Path, source: str, artifacts: str = "artifacts", **data: Any) -> Params:
    """Params reading ``<tmp>/data/<source>/widget`` and writing ``<tmp>/<artifacts>/datasets``."""
    raw: dict[str, Any] = {
        "seed": 3,
        "paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / artifacts)},
        "data": {
            "source": source,
            "category": "widget",
            "image_size": SIZE,
            "lighting_conditions": ["UniformLight"],
            "workers": 1,
        },
    }
    raw["data"].update(data)
    return parse_params(raw)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.size == (SIZE, SIZE), f"{path} is {image.size}, not {SIZE}x{SIZE}"
        return np.asarray(image).copy()


def resized_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC))


def resized_mask(mask: np.ndarray) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((SIZE, SIZE), Image.Resampling.NEAREST)
    return np.asarray(image) > 127


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def decode(segmentation: dict[str, Any]) -> np.ndarray:
    assert isinstance(segmentation["counts"], str) and segmentation["size"] == [SIZE, SIZE]
    return mask_utils.decode({**segmentation, "counts": segmentation["counts"].encode()}).astype(bool)


def coco_by_name(layout: DatasetLayout, split: str) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The COCO payload and ``{image stem: its annotations}``."""
    payload = json.loads(layout.coco_json(split).read_text())
    anns: dict[int, list[dict[str, Any]]] = {}
    for ann in payload["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    return payload, {Path(im["file_name"]).stem: anns.get(im["id"], []) for im in payload["images"]}


def split_of(params: Params) -> dict[str, str]:
    return {s["name"]: s["split"] for s in json.loads((params.datasets_dir / "split.json").read_text())["samples"]}


# ---------------------------------------------------------------- TAO segmentation


@pytest.mark.parametrize(("ext", "mask_values"), [(".png", 255), (".jpg", 1)])
def test_tao_segment_reader_keeps_the_lists(tmp_path: Path, ext: str, mask_values: int) -> None:
    written = write_tao_segment(tmp_path / "tao", ext=ext, mask_values=mask_values)
    index = read_tao_segment(written.root, SourceOptions())
    assert index.format == "tao-segment" and index.classes == ("defect",)
    assert {r.name: r.split for r in index.records} == written.splits
    for record in index.records:
        assert record.label is None  # decided from the mask while preparing
        assert record.image == written.images[record.name] and record.image.suffix == ext
        assert record.golden == written.root / "B" / f"{record.name}{ext}"
        assert record.mask == written.root / "label" / f"{record.name}.png"
    # list/train.txt:1 is "part_000<ext>", line 2 is the bare "part_001".
    lines = (written.root / "list" / "train.txt").read_text().splitlines()
    assert lines[:2] == [f"part_000{ext}", "part_001"]
    assert index.records[1].where == f"{written.root / 'list' / 'train.txt'}:2"


def test_tao_segment_names_with_dots(tmp_path: Path) -> None:
    """``lot.7_001`` is a name, not ``lot`` with extension ``.7_001``."""
    written = write_tao_segment(tmp_path / "tao", prefix="lot.7_")
    index = read_tao_segment(written.root, SourceOptions())
    assert sorted(r.name for r in index.records) == written.names()


@pytest.mark.parametrize(("ext", "mask_values"), [(".png", 255), (".jpg", 1)])
def test_tao_segment_prepare_labels_from_the_mask(tmp_path: Path, ext: str, mask_values: int) -> None:
    params = source_params(tmp_path, "tao-segment")
    written = write_tao_segment(params.raw_category_dir, ext=ext, mask_values=mask_values)
    summary = prepare_datasets(params)
    layout = DatasetLayout(params.datasets_dir)
    assert prepared_datasets(params.datasets_dir) == ("segment", "classify", "coco")
    manifest = json.loads((params.datasets_dir / MANIFEST).read_text())
    assert manifest == {"format": "tao-segment", "datasets": ["segment", "classify", "coco"], "classes": ["defect"]}
    assert not layout.segment_list("test").exists()
    n_defect = {s: sum(written.labels[n] == "defect" for n in written.names(s)) for s in ("train", "val")}
    assert n_defect == {"train": 3, "val": 1}
    assert summary["segment/train"] == 6 and summary["segment/val"] == 3
    assert summary["segment/train_defect"] == 3 and summary["segment/val_defect"] == 1
    for split in ("train", "val"):
        assert read_segment_list(layout.segment_list(split)) == written.names(split)
        rows = csv_rows(layout.classify_csv(split))
        assert [r["object_name"] for r in rows] == written.names(split)
        assert [r["label"] for r in rows] == [
            "PASS" if written.labels[n] == "good" else "defect" for n in written.names(split)
        ]
        _, anns = coco_by_name(layout, split)
        for name in written.names(split):
            label = pixels(layout.segment_image("label", name))
            assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 255}
            assert np.array_equal(label > 0, resized_mask(written.masks[name]))
            assert np.array_equal(pixels(layout.segment_image("A", name)), resized_rgb(written.images[name]))
            b_source = written.root / "B" / f"{name}{ext}"
            assert np.array_equal(pixels(layout.segment_image("B", name)), resized_rgb(b_source))
            # the classify input is a byte copy of A; its golden of B
            image = classify_image_path(layout.classify_images, f"input/{name}", name, "UniformLight")
            assert image.read_bytes() == layout.segment_image("A", name).read_bytes()
            (golden,) = golden_image_paths(layout.classify_images, f"golden/{name}", name, "UniformLight", 1)
            assert golden.read_bytes() == layout.segment_image("B", name).read_bytes()
            expected = 1 if written.labels[name] == "defect" else 0  # one rectangle per defect mask
            assert len(anns[name]) == expected
            if expected:
                assert anns[name][0]["category_id"] == 1
                assert np.array_equal(decode(anns[name][0]["segmentation"]), label > 0)


# ---------------------------------------------------------------- TAO classification


def test_tao_classify_reader(tmp_path: Path) -> None:
    written = write_tao_classify(tmp_path / "tc", num_golden=2)
    index = read_tao_classify(written.root, SourceOptions())
    assert index.lights == ("UniformLight", "WhiteLight")
    assert index.classes == ("missing_part", "no_pass")
    assert {r.name: r.split for r in index.records} == written.splits
    assert {r.name: r.label for r in index.records} == written.labels
    record = next(r for r in index.records if r.name == "obj_003")
    images = written.root / "images"
    assert record.lights == tuple((lt, images / "input/lot1" / f"obj_003_{lt}.png") for lt in index.lights)
    assert record.golden_lights == tuple(
        tuple((lt, images / "golden/obj_003" / str(g) / f"obj_003_{lt}.png") for lt in index.lights) for g in range(2)
    )
    assert record.where == f"{written.root / 'train.csv'}:5"  # header is line 1


def test_tao_classify_single_csv_and_options(tmp_path: Path) -> None:
    written = write_tao_classify(tmp_path / "tc", lights=("WhiteLight",), split_csvs=False)
    index = read_tao_classify(written.root, SourceOptions())
    assert index.lights == ("WhiteLight",) and all(r.split is None for r in index.records)
    assert read_tao_classify(written.root, SourceOptions(classes=("missing_part", "no_pass"))).classes == index.classes
    with pytest.raises(SourceError, match=re.escape(f"{written.root / 'dataset.csv'}:3: label 'NO_PASS'")):
        read_tao_classify(written.root, SourceOptions(classes=("missing_part",)))


def test_tao_classify_csv_from_a_spreadsheet(tmp_path: Path) -> None:
    """Excel writes CSVs with a byte-order mark and CRLF line ends; both are still TAO CSVs."""
    written = write_tao_classify(tmp_path / "tc")
    path = written.root / "train.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    index = read_tao_classify(written.root, SourceOptions())
    assert {r.name: r.label for r in index.records} == written.labels
    assert next(r for r in index.records if r.name == "obj_003").where == f"{path}:5"


def test_tao_classify_prepare_writes_only_classify(tmp_path: Path) -> None:
    lights = ["UniformLight", "WhiteLight"]
    params = source_params(tmp_path, "tao-classify", lighting_conditions=lights, num_golden=2)
    written = write_tao_classify(params.raw_category_dir, num_golden=2)
    summary = prepare_datasets(params)
    layout = DatasetLayout(params.datasets_dir)
    assert prepared_datasets(params.datasets_dir) == ("classify",)
    assert sorted(p.name for p in params.datasets_dir.iterdir()) == ["classify", "manifest.json", "split.json"]
    assert summary["classify/images"] == 9 * 2 * 3 and summary["coco/train_images"] == 0
    src = written.root / "images"
    for split in ("train", "val"):
        rows = csv_rows(layout.classify_csv(split))
        assert [r["object_name"] for r in rows] == written.names(split)
        for row in rows:
            name = row["object_name"]
            assert row["label"] == ("PASS" if written.labels[name] == "good" else written.labels[name])
            lot = f"lot{int(name[-3:]) % 2}"
            for light in lights:
                image = classify_image_path(layout.classify_images, row["input_path"], name, light)
                assert np.array_equal(pixels(image), resized_rgb(src / "input" / lot / f"{name}_{light}.png"))
                goldens = golden_image_paths(layout.classify_images, row["golden_path"], name, light, 2)
                for g, golden in enumerate(goldens):
                    expected = resized_rgb(src / "golden" / name / str(g) / f"{name}_{light}.png")
                    assert np.array_equal(pixels(golden), expected)


def test_tao_classify_one_configured_light(tmp_path: Path) -> None:
    params = source_params(tmp_path, "tao-classify", lighting_conditions=["WhiteLight"])
    write_tao_classify(params.raw_category_dir)
    prepare_datasets(params)
    files = sorted(p.name for p in (DatasetLayout(params.datasets_dir).classify_images / "golden/obj_000").iterdir())
    assert files == ["obj_000_WhiteLight.png"]
    missing = source_params(tmp_path, "tao-classify", artifacts="other", lighting_conditions=["SolderLight"])
    with pytest.raises(SourceError, match=r"asks for \['SolderLight'\].*only \['UniformLight', 'WhiteLight'\]"):
        prepare_datasets(missing)
    two_goldens = source_params(tmp_path, "tao-classify", artifacts="other", num_golden=2)
    with pytest.raises(LightingError, match=re.escape(f"{params.raw_category_dir / 'train.csv'}:2: no golden")):
        prepare_datasets(two_goldens)
    assert not two_goldens.datasets_dir.exists()


# ---------------------------------------------------------------- COCO


@pytest.mark.parametrize("split_files", [True, False])
def test_coco_reader(tmp_path: Path, split_files: bool) -> None:
    written = write_coco(tmp_path / "coco", split_files=split_files)
    index = read_coco(written.root, SourceOptions())
    assert index.classes == ("dent", "scratch")
    assert {r.name: r.split for r in index.records} == written.splits
    assert {r.name: r.label for r in index.records} == written.labels
    for record in index.records:
        assert record.image == written.images[record.name] and record.golden is None
        boxes = [(i.box.x1, i.box.y1, i.box.x2, i.box.y2, i.box.label) for i in record.instances]
        assert boxes == written.boxes[record.name]
        assert record.masked == all(o is not None for o in written.outlines[record.name])
    kinds = {r.name: [type(i.segmentation).__name__ for i in r.instances] for r in index.records}
    assert (
        kinds["img_001"] == ["list"] and kinds["img_002"] == ["dict"] and kinds["sub__img_004"] == ["NoneType", "dict"]
    )


def test_coco_prepare_scales_boxes_and_reencodes_outlines(tmp_path: Path) -> None:
    params = source_params(tmp_path, "coco")
    written = write_coco(params.raw_category_dir)
    summary = prepare_datasets(params)
    layout = DatasetLayout(params.datasets_dir)
    assert prepared_datasets(params.datasets_dir) == ("coco",)
    assert not layout.segment.exists() and not layout.classify.exists()
    assert (summary["coco/train_images"], summary["coco/train_annotations"]) == (5, 5)
    assert (summary["coco/val_images"], summary["coco/val_annotations"]) == (2, 1)
    sx, sy = SIZE / written.size[0], SIZE / written.size[1]
    for split in ("train", "val"):
        payload, anns = coco_by_name(layout, split)
        assert payload["categories"] == [
            {"id": 1, "name": "dent", "supercategory": "defect"},
            {"id": 2, "name": "scratch", "supercategory": "defect"},
        ]
        assert sorted(anns) == written.names(split)
        for image in payload["images"]:
            name = Path(image["file_name"]).stem
            assert image["file_name"] == f"coco/images/{name}.png" and (image["width"], image["height"]) == (SIZE, SIZE)
            assert np.array_equal(pixels(layout.root / image["file_name"]), resized_rgb(written.images[name]))
            assert "golden_file_name" not in image
            own = anns[name]
            assert len(own) == len(written.boxes[name])
            for ann, (x1, y1, x2, y2, label), outline in zip(
                own, written.boxes[name], written.outlines[name], strict=True
            ):
                assert ann["category_id"] == {"dent": 1, "scratch": 2}[label]
                expected = [x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy]
                assert ann["bbox"] == pytest.approx(expected, abs=0.01)
                x, y, w, h = ann["bbox"]
                assert x >= 0 and y >= 0 and x + w <= SIZE + 1e-6 and y + h <= SIZE + 1e-6
                if outline is None:
                    assert "segmentation" not in ann and ann["area"] == pytest.approx(w * h, abs=0.05)
                else:
                    region = decode(ann["segmentation"])
                    assert np.array_equal(region, resized_mask(outline)) and ann["area"] == int(region.sum())
    # box of sub/img_004's dent: [40, 2, 16, 10] in 60 x 44 pixels
    assert anns_of(layout, "train", "sub__img_004")[0]["bbox"] == [21.33, 1.45, 8.53, 7.27]


def anns_of(layout: DatasetLayout, split: str, name: str) -> list[dict[str, Any]]:
    return coco_by_name(layout, split)[1][name]


# ---------------------------------------------------------------- pairs


def test_pairs_reader(tmp_path: Path) -> None:
    written = write_pairs(tmp_path / "pairs")
    index = read_pairs(written.root, written.options)
    assert index.classes == ("defect", "dent", "scratch")
    assert {r.name: r.split for r in index.records} == written.splits == dict.fromkeys(written.splits)
    by_name = {r.name: r for r in index.records}
    for name, record in by_name.items():
        boxes = [(i.box.x1, i.box.y1, i.box.x2, i.box.y2, i.box.label) for i in record.instances]
        assert boxes == written.boxes[name]
        assert record.golden == written.root / f"{name}_golden.png"
        assert (record.mask is not None) == (name in written.masks)
        assert record.masked == (name in written.masks or not boxes)
        assert record.label == (None if written.labels[name] == "defect" else written.labels[name])
    # p005 is boxed with two boxes; its file's line 1 is a comment, so the boxes are lines 2 and 3
    assert [i.where for i in by_name["p005"].instances] == [f"{written.root / 'p005.txt'}:{n}" for n in (2, 3)]
    assert (by_name["p004"].instances[0].box.x1, by_name["p004"].instances[0].box.x2) == (3.5, 15.5)


def test_pairs_split_pattern(tmp_path: Path) -> None:
    params = source_params(tmp_path, "pairs")
    written = write_pairs(params.raw_category_dir, split_dirs=True)
    assert load_options(written.root) == ("pairs", written.options)
    index = read_source(params)
    assert {r.name: r.split for r in index.records} == written.splits
    assert written.splits["test_p003"] == "test" and written.splits["val_p006"] == "val"
    assert index.records[0].image == written.root / "test" / "p003_test.png"
    summary = prepare_datasets(params)
    layout = DatasetLayout(params.datasets_dir)
    assert layout.segment_list("test").is_file()  # given by the source although test_fraction is 0
    assert split_of(params) == written.splits
    assert summary["data/records"] == 10


def test_pairs_prepare(tmp_path: Path) -> None:
    params = source_params(tmp_path, "pairs", val_fraction=0.3)
    written = write_pairs(params.raw_category_dir)
    summary = prepare_datasets(params)
    layout = DatasetLayout(params.datasets_dir)
    assert prepared_datasets(params.datasets_dir) == ("segment", "classify", "coco")
    splits = split_of(params)
    boxed_only = {n for n, b in written.boxes.items() if b and n not in written.masks}
    assert boxed_only == {"p004", "p005"} and summary["segment/unlabelled"] == 2
    listed = {n for s in ("train", "val") for n in read_segment_list(layout.segment_list(s))}
    assert listed == set(written.splits) - boxed_only
    for name in boxed_only:
        assert not layout.segment_image("label", name).exists()
        assert layout.segment_image("A", name).is_file()  # COCO's image
    classify = {r["object_name"]: r["label"] for s in ("train", "val") for r in csv_rows(layout.classify_csv(s))}
    assert classify == {n: "PASS" if lb == "good" else lb for n, lb in written.labels.items()}
    categories = {"defect": 1, "dent": 2, "scratch": 3}
    sx, sy = SIZE / written.size[0], SIZE / written.size[1]
    for name, label in written.labels.items():
        anns = anns_of(layout, splits[name], name)
        if label == "good":
            assert anns == [] and not pixels(layout.segment_image("label", name)).any()
            continue
        if name in written.masks:
            label_pixels = pixels(layout.segment_image("label", name))
            assert set(np.unique(label_pixels)) == {0, 255}
            mask = label_pixels > 0
            assert np.array_equal(mask, resized_mask(written.masks[name]))
        if name in boxed_only:
            assert [a["category_id"] for a in anns] == [categories[b[4]] for b in written.boxes[name]]
            for ann, (x1, y1, x2, y2, _) in zip(anns, written.boxes[name], strict=True):
                assert ann["bbox"] == pytest.approx([x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy], abs=0.01)
                assert "segmentation" not in ann
        elif written.boxes[name]:  # box and mask: the mask's pixels inside the box
            (ann,) = anns
            assert ann["category_id"] == categories[label]
            assert np.array_equal(decode(ann["segmentation"]), mask) and ann["area"] == int(mask.sum())
        else:  # mask only: one region, class "defect"
            (ann,) = anns
            assert ann["category_id"] == categories["defect"]
            assert np.array_equal(decode(ann["segmentation"]), mask)


# ---------------------------------------------------------------- seeded split


def test_seeded_split_is_stable_and_stratified(tmp_path: Path) -> None:
    params = source_params(tmp_path, "pairs", val_fraction=0.3)
    written = write_pairs(params.raw_category_dir, n_good=10, n_boxed=5, n_masked=4, n_both=0, classes=("scratch",))
    prepare_datasets(params)
    first = split_of(params)
    assert set(first) == set(written.splits)
    strata = {"good": 10, "scratch": 5, "defect": 4}
    for stratum, n in strata.items():
        members = [name for name, label in written.labels.items() if label == stratum]
        assert len(members) == n
        _, n_val, _ = class_split_sizes(n, 0.3, 0.0)
        assert sum(first[name] == "val" for name in members) == n_val  # 3, 2, 1
    again = source_params(tmp_path, "pairs", artifacts="again", val_fraction=0.3)
    prepare_datasets(again)
    assert split_of(again) == first
    assert tree_digest(again.datasets_dir) == tree_digest(params.datasets_dir)
    # one more pair of a new class leaves every other record where it was
    root = params.raw_category_dir
    save(root / "p100_test.png", noise(1, written.size))
    save(root / "p100_golden.png", noise(2, written.size))
    (root / "p100.txt").write_text("1,1,9,9,dent\n")
    prepare_datasets(params)
    grown = split_of(params)
    assert grown.pop("p100") == "train" and grown == first


def test_half_given_splits_are_refused() -> None:
    records = (
        Record(name="a", image=Path("a.png"), label="good", split="train", where="a.png"),
        Record(name="b", image=Path("b.png"), label="good", where="b.png"),
    )
    with pytest.raises(SourceError, match=r"b\.png: has no split while a\.png has one"):
        assign_splits(records, 0, 0.3, 0.0)
    bad = (Record(name="a", image=Path("a.png"), label="good", split="holdout", where="a.png"),)
    with pytest.raises(SourceError, match="unknown split 'holdout'"):
        assign_splits(bad, 0, 0.3, 0.0)


# ---------------------------------------------------------------- parallel


def test_parallel_prepare_writes_the_same_bytes(tmp_path: Path) -> None:
    serial = source_params(tmp_path, "pairs", artifacts="serial", workers=1)
    written = write_pairs(serial.raw_category_dir, n_good=28, n_boxed=8, n_masked=8, n_both=8, size=(36, 28))
    assert len(written.splits) > 48  # prepare.PARALLEL_MIN_RECORDS: the pool is really used
    parallel = source_params(tmp_path, "pairs", artifacts="parallel", workers=2)
    assert worker_count(parallel.data.workers, len(written.splits)) == 2
    assert prepare_datasets(serial) == prepare_datasets(parallel)
    digest = tree_digest(parallel.datasets_dir)
    assert len(digest) > 4 * 52 and digest == tree_digest(serial.datasets_dir)
    # an image that fails in a worker is named, and the previous datasets stay
    corrupt = written.images["p040"]
    corrupt.write_bytes(corrupt.read_bytes()[:50])
    with pytest.raises(ImageReadError, match=re.escape(str(corrupt))):
        prepare_datasets(parallel)
    assert tree_digest(parallel.datasets_dir) == digest
    assert sorted(p.name for p in parallel.paths.artifacts_dir.iterdir()) == ["datasets"]


# ---------------------------------------------------------------- bad sources


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _tao_entry_without_file(params: Params) -> str:
    written = write_tao_segment(params.raw_category_dir)
    (written.root / "label" / "part_007.png").unlink()
    return re.escape(f"{written.root / 'list' / 'val.txt'}:2: entry 'part_007' has no file in label/")


def _tao_entry_twice(params: Params) -> str:
    written = write_tao_segment(params.raw_category_dir)
    _append(written.root / "list" / "val.txt", "part_001.png\n")
    return re.escape(f"{written.root / 'list' / 'val.txt'}:5: entry 'part_001.png' is listed again") + ".*train.txt:2"


def _tao_missing_list(params: Params) -> str:
    written = write_tao_segment(params.raw_category_dir)
    (written.root / "list" / "val.txt").unlink()
    return re.escape(f"{written.root / 'list' / 'val.txt'}: missing")


def _csv_row_without_light(params: Params) -> str:
    written = write_tao_classify(params.raw_category_dir)
    (written.root / "images" / "input" / "lot0" / "obj_002_WhiteLight.png").unlink()
    return re.escape(f"{written.root / 'train.csv'}:4: no image for lighting condition(s) ['WhiteLight']")


def _csv_row_without_golden(params: Params) -> str:
    written = write_tao_classify(params.raw_category_dir)
    for path in (written.root / "images" / "golden" / "obj_007").iterdir():
        path.unlink()
    return re.escape(f"{written.root / 'val.csv'}:3: no golden ") + ".*obj_007"


def _csv_without_column(params: Params) -> str:
    written = write_tao_classify(params.raw_category_dir)
    path = written.root / "val.csv"
    path.write_text(path.read_text().replace("object_name", "object"))
    return re.escape(f"{path}:1: header") + r".*\['object_name'\]"


def _csv_unknown_class(params: Params) -> str:
    written = write_tao_classify(params.raw_category_dir)
    write_options(written.root, "tao-classify", SourceOptions(classes=("no_pass",)))
    return re.escape(f"{written.root / 'train.csv'}:5: label 'Missing Part' is not a known class ['no_pass']")


def _box_unknown_class(params: Params) -> str:
    written = write_pairs(params.raw_category_dir)
    write_options(written.root, "pairs", SourceOptions(classes=("scratch",)))
    return re.escape(f"{written.root / 'p005.txt'}:2: class 'dent' is not a known class ['scratch']")


def _box_line_malformed(params: Params) -> str:
    written = write_pairs(params.raw_category_dir)
    _append(written.root / "p004.txt", "1,2,3\n")
    return re.escape(f"{written.root / 'p004.txt'}:4: expected x1,y1,x2,y2[,class], got '1,2,3'")


def _box_not_numbers(params: Params) -> str:
    written = write_pairs(params.raw_category_dir)
    (written.root / "p000.txt").write_text("1,2,three,4,scratch\n")
    return re.escape(f"{written.root / 'p000.txt'}:1: box coordinates must be numbers")


def _golden_missing(params: Params) -> str:
    written = write_pairs(params.raw_category_dir)
    (written.root / "p003_golden.png").unlink()
    return re.escape(f"{written.root / 'p003_test.png'}: its golden {written.root / 'p003_golden.png'} is missing")


def _coco_unknown_category(params: Params) -> str:
    written = write_coco(params.raw_category_dir)
    path = written.root / "train.json"
    payload = json.loads(path.read_text())
    payload["annotations"][2]["category_id"] = 99
    path.write_text(json.dumps(payload))
    return re.escape(f"{path}: annotation 3: category_id 99 is not among the categories [3, 7]")


def _coco_unknown_image(params: Params) -> str:
    written = write_coco(params.raw_category_dir)
    path = written.root / "val.json"
    payload = json.loads(path.read_text())
    payload["annotations"][0]["image_id"] = 1234
    path.write_text(json.dumps(payload))
    return re.escape(f"{path}: annotation 1: image_id 1234 is not among the images of val.json")


def _coco_bad_bbox(params: Params) -> str:
    written = write_coco(params.raw_category_dir)
    path = written.root / "train.json"
    payload = json.loads(path.read_text())
    payload["annotations"][1]["bbox"] = [1, 2, 3]
    path.write_text(json.dumps(payload))
    return re.escape(f"{path}: annotation 2: needs image_id, category_id and bbox")


def _coco_unknown_class(params: Params) -> str:
    written = write_coco(params.raw_category_dir)
    write_options(written.root, "coco", SourceOptions(classes=("scratch",)))
    return re.escape(f"{written.root / 'train.json'}: category 3 'dent' is not a known class ['scratch']")


def _recorded_as_other_format(params: Params) -> str:
    written = write_pairs(params.raw_category_dir)
    write_options(written.root, "coco", SourceOptions())
    return re.escape(f"{written.root}: was imported as 'coco' but data.source is 'pairs'")


BAD_SOURCES = {
    "tao-segment": [_tao_entry_without_file, _tao_entry_twice, _tao_missing_list],
    "tao-classify": [_csv_row_without_light, _csv_row_without_golden, _csv_without_column, _csv_unknown_class],
    "pairs": [_box_unknown_class, _box_line_malformed, _box_not_numbers, _golden_missing, _recorded_as_other_format],
    "coco": [_coco_unknown_category, _coco_unknown_image, _coco_bad_bbox, _coco_unknown_class],
}


@pytest.mark.parametrize(
    ("source", "breaker"),
    [(source, breaker) for source, breakers in BAD_SOURCES.items() for breaker in breakers],
    ids=lambda v: v.__name__.strip("_") if callable(v) else v,
)
def test_bad_source_names_file_and_line(tmp_path: Path, source: str, breaker: Any) -> None:
    lights = ["UniformLight", "WhiteLight"] if source == "tao-classify" else ["UniformLight"]
    params = source_params(tmp_path, source, lighting_conditions=lights)
    expected = breaker(params)
    with pytest.raises(SourceError, match=expected):
        prepare_datasets(params)
    assert not params.paths.artifacts_dir.exists() or not any(params.paths.artifacts_dir.iterdir())


def test_source_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"--test-pattern '\{split\}_test\.png' must contain \{id\}"):
        SourceOptions(test_pattern="{split}_test.png")
    with pytest.raises(SourceError, match="--box-separator must not be empty"):
        SourceOptions(box_separator="")
    with pytest.raises(SourceError, match=r"unknown option\(s\) \['colour'\]"):
        SourceOptions.from_json({"colour": "red"})
    options = SourceOptions(classes=("a", "b"), box_separator=" ", mask_pattern=None)
    assert load_options(write_options(tmp_path, "pairs", options).parent) == ("pairs", options)
    params = source_params(tmp_path, "coco")
    with pytest.raises(SourceError, match=r"widget: not found; run `inspectops data import --format coco"):
        read_source(params)


def test_box_separator_option(tmp_path: Path) -> None:
    written = write_pairs(tmp_path / "pairs", n_good=1, n_boxed=1, n_masked=0, n_both=0)
    (written.root / "p001.txt").write_text("2 3 10 12 scratch\n")
    index = read_pairs(written.root, SourceOptions(box_separator=" "))
    (record,) = [r for r in index.records if r.instances]
    assert [(i.box.x1, i.box.y1, i.box.x2, i.box.y2, i.box.label) for i in record.instances] == [
        (2, 3, 10, 12, "scratch")
    ]


# ---------------------------------------------------------------- a failed prepare keeps the previous datasets


def _break_tao_segment(written: Written) -> None:
    (written.root / "B" / "part_004.png").unlink()


def _break_tao_classify(written: Written) -> None:
    (written.root / "images" / "input" / "lot1" / "obj_005_UniformLight.png").unlink()


def _break_coco(written: Written) -> None:
    written.images["img_003"].write_bytes(b"not a png")


def _break_pairs(written: Written) -> None:
    (written.root / "p006_mask.png").write_bytes(b"\x89PNG broken")


WRITERS = {
    "tao-segment": (write_tao_segment, _break_tao_segment, SourceError),
    "tao-classify": (write_tao_classify, _break_tao_classify, SourceError),
    "coco": (write_coco, _break_coco, ImageReadError),
    "pairs": (write_pairs, _break_pairs, ImageReadError),
}


@pytest.mark.parametrize("source", sorted(WRITERS))
def test_failed_prepare_keeps_previous_datasets(tmp_path: Path, source: str) -> None:
    write, break_source, error = WRITERS[source]
    params = source_params(tmp_path, source)
    written = write(params.raw_category_dir)
    prepare_datasets(params)
    before = tree_digest(params.datasets_dir)
    break_source(written)
    with pytest.raises(error, match=re.escape(str(written.root))):
        prepare_datasets(params)
    assert tree_digest(params.datasets_dir) == before
    assert sorted(p.name for p in params.paths.artifacts_dir.iterdir()) == ["datasets"]  # no staging left
