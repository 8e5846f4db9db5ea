"""Class folders (``--format folders``): the reader, its goldens, import, prepare and what CAM reads.

The folders come from :func:`tests.source_fixtures.write_class_folders` (seeded noise, mixed
sizes and extensions, a nested ``lot 2/`` folder); prepare runs at 32 px.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from components.config import Params, parse_params
from components.data.formats import DatasetLayout, classify_image_path, read_image_labels
from components.data.importer import SourceCheckError, import_source
from components.data.prepare import MANIFEST, prepare_datasets, prepared_datasets
from components.data.sources import SOURCE_FORMATS, SourceError, read_source
from components.data.sources.folders import read_folders
from components.data.sources.options import OPTIONS_FILE, SourceOptions
from components.data.split import golden_pool_size
from components.pipeline.stages import plan
from tests.source_fixtures import noise, save, write_class_folders

SIZE = 32


def folder_params(tmp_path: Path, artifacts: str = "artifacts", seed: int = 3, **data: Any) -> Params:
    """Params reading ``<tmp>/data/folders/widget`` and writing ``<tmp>/<artifacts>/datasets``."""
    raw: dict[str, Any] = {
        "seed": seed,
        "paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / artifacts)},
        "data": {
            "source": "folders",
            "category": "widget",
            "image_size": SIZE,
            "lighting_conditions": ["UniformLight"],
            "golden_fraction": 0.3,
            "workers": 1,
            **data,
        },
    }
    return parse_params(raw)


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- the reader


def test_reader_labels_every_image_by_its_folder(tmp_path: Path) -> None:
    written = write_class_folders(tmp_path / "parts")
    index = read_folders(written.root, SourceOptions())
    assert index.format == "folders" and index.classes == ("dent", "scratch")
    by_name = {r.name: r for r in index.records}
    assert {n: r.label for n, r in by_name.items()} == written.labels
    assert {n: r.split for n, r in by_name.items()} == written.splits == dict.fromkeys(written.labels)
    for name, record in by_name.items():
        assert record.image == written.images[name]
        assert record.mask is None and not record.instances and record.golden is None  # goldens: at prepare
        assert record.masked == (record.label == "good")  # a defect is never "no change"
    nested = by_name["scratch__lot_2__scratch_002"]  # "lot 2/" made file-safe
    assert nested.image == written.root / "scratch" / "lot 2" / "scratch_002.bmp"
    sizes = {Image.open(path).size for path in written.images.values()}
    assert len(sizes) == 2  # mixed sizes are fine


def test_split_folders_give_the_split(tmp_path: Path) -> None:
    written = write_class_folders(tmp_path / "parts", split_dirs=True)
    index = read_folders(written.root, SourceOptions())
    assert {r.name: r.split for r in index.records} == written.splits
    assert {"train", "val"} == set(written.splits.values())
    assert written.splits["val__good__good_002"] == "val"


def test_good_aliases_case_and_clashing_names(tmp_path: Path) -> None:
    written = write_class_folders(tmp_path / "parts", good_folder="OK", classes=("Scratch",))
    index = read_folders(written.root, SourceOptions())
    assert {r.label for r in index.records} == {"good", "scratch"} and index.classes == ("scratch",)
    # a.png and a.jpg in one folder: both kept, named apart by their extension
    save(written.root / "Scratch" / "twin.png", noise(1, (20, 20)))
    save(written.root / "Scratch" / "twin.jpg", noise(2, (20, 20)))
    names = {r.name for r in read_folders(written.root, SourceOptions()).records}
    assert {"Scratch__twin.jpg", "Scratch__twin.png"} <= names


@pytest.mark.parametrize(
    ("second", "words"),
    [
        ("good", r"folders OK/, good/ would all be the good class"),
        ("pass", r"folders OK/, pass/ would all be the good class"),
        ("scratch", r"folders Scratch/, scratch/ would all be class 'scratch'"),
    ],
)
def test_two_folders_of_one_class_are_refused(tmp_path: Path, second: str, words: str) -> None:
    written = write_class_folders(tmp_path / "parts", good_folder="OK", classes=("Scratch",))
    save(written.root / second / "x.png", noise(3, (20, 20)))
    with pytest.raises(SourceError, match=words):
        read_folders(written.root, SourceOptions())


def _remove(root: Path, folder: str) -> None:
    for path in sorted((root / folder).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / folder).rmdir()


def test_missing_good_or_defect_images_say_what_to_add(tmp_path: Path) -> None:
    written = write_class_folders(tmp_path / "a")
    _remove(written.root, "good")
    with pytest.raises(SourceError, match=re.escape(f"{written.root / 'good'}: no good images; add images of good")):
        read_folders(written.root, SourceOptions())
    written = write_class_folders(tmp_path / "b", classes=())
    with pytest.raises(SourceError, match=re.escape(f"{written.root}: no defect images; add one folder per defect")):
        read_folders(written.root, SourceOptions())
    written = write_class_folders(tmp_path / "c", split_dirs=True)
    _remove(written.root / "train", "good")
    with pytest.raises(SourceError, match=re.escape(f"{written.root / 'train' / 'good'}: no good images")):
        read_folders(written.root, SourceOptions())


def test_malformed_layouts_are_refused_naming_the_path(tmp_path: Path) -> None:
    written = write_class_folders(tmp_path / "a", split_dirs=True)
    save(written.root / "dent" / "x.png", noise(4, (20, 20)))
    with pytest.raises(SourceError, match=r"holds split folders \(train/, val/\) and class folders \(dent/\)"):
        read_folders(written.root, SourceOptions())
    written = write_class_folders(tmp_path / "b", split_dirs=True)
    _remove(written.root, "val")
    with pytest.raises(SourceError, match=r"split folders need both train/ and val/ \(missing val/\)"):
        read_folders(written.root, SourceOptions())
    written = write_class_folders(tmp_path / "c")
    save(written.root / "stray.png", noise(5, (20, 20)))
    with pytest.raises(SourceError, match=re.escape(f"{written.root / 'stray.png'}: an image outside a class folder")):
        read_folders(written.root, SourceOptions())
    written = write_class_folders(tmp_path / "d")
    (written.root / "crack").mkdir()
    with pytest.raises(SourceError, match=re.escape(f"{written.root / 'crack'}: no images")):
        read_folders(written.root, SourceOptions())
    written = write_class_folders(tmp_path / "e")
    with pytest.raises(SourceError, match=r"class folder\(s\) \['dent'\] are not known classes \['scratch'\]"):
        read_folders(written.root, SourceOptions(classes=("scratch",)))


def test_goldens_come_from_a_seeded_pool_of_good_images(tmp_path: Path) -> None:
    params = folder_params(tmp_path, num_golden=2)
    written = write_class_folders(params.raw_category_dir, n_good=10)
    index = read_source(params)
    goods = [n for n, label in written.labels.items() if label == "good"]
    pool = {entry["name"] for entry in index.manifest["golden_pool"]}
    assert index.golden_pool == len(pool) == golden_pool_size(10, 0.3) == 3 and pool <= set(goods)
    assert {r.name for r in index.records} == set(written.labels) - pool  # set aside as references
    pool_images = {written.images[n] for n in pool}
    for record in index.records:
        goldens = [files[0][1] for files in record.golden_lights]
        assert len(goldens) == len(set(goldens)) == 2 and set(goldens) <= pool_images
        assert record.golden == goldens[0] and record.split in ("train", "val")
    again = read_source(params)
    assert again.records == index.records and again.manifest == index.manifest  # seeded: stable
    # one more defect image changes no other record's goldens or split
    save(written.root / "dent" / "zz_new.png", noise(9, written.size))
    grown = {r.name: r for r in read_source(params).records}
    assert grown.pop("dent__zz_new").golden in pool_images
    assert grown == {r.name: r for r in index.records}


def test_split_folders_draw_the_pool_from_train_good_only(tmp_path: Path) -> None:
    params = folder_params(tmp_path, golden_fraction=0.5)
    written = write_class_folders(params.raw_category_dir, n_good=9, split_dirs=True)
    index = read_source(params)
    pool = [entry["name"] for entry in index.manifest["golden_pool"]]
    assert pool and all(name.startswith("train__good__") for name in pool)
    assert {r.name: r.split for r in index.records} == {n: s for n, s in written.splits.items() if n not in pool}


def test_several_lights_are_refused(tmp_path: Path) -> None:
    params = folder_params(tmp_path, lighting_conditions=["UniformLight", "WhiteLight"])
    write_class_folders(params.raw_category_dir)
    with pytest.raises(SourceError, match=r"one image per part.*set it to one light"):
        read_source(params)


# ---------------------------------------------------------------- import


def test_import_copies_every_image_and_records_the_format(tmp_path: Path) -> None:
    written = write_class_folders(tmp_path / "src", split_dirs=True)
    (written.root / "notes.txt").write_text("not an image")
    found = import_source("folders", written.root, "line7", tmp_path / "data" / "folders")
    target = tmp_path / "data" / "folders" / "line7"
    copied = set(digest(target))
    expected = {p.relative_to(written.root).as_posix() for p in written.images.values()}
    assert copied == expected | {OPTIONS_FILE}
    assert "val/scratch/lot 2/scratch_002.bmp" in copied
    assert found["records"] == len(written.labels) and found["classes"] == ["dent", "scratch"]
    assert found["splits"] == {"train": 8, "val": 4} and found["masks"] == found["boxes"] == 0
    recorded = json.loads((target / OPTIONS_FILE).read_text())
    assert recorded["format"] == "folders" and recorded["options"] == SourceOptions().to_json()
    for path in written.images.values():
        assert (target / path.relative_to(written.root)).read_bytes() == path.read_bytes()


def test_a_corrupt_image_fails_the_checks_naming_it(tmp_path: Path) -> None:
    written = write_class_folders(tmp_path / "src")
    broken = written.images["dent__dent_001"]
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(SourceCheckError, match=re.escape(str(broken))):
        import_source("folders", written.root, "line7", tmp_path / "out")
    assert not (tmp_path / "out" / "line7").exists()


# ---------------------------------------------------------------- prepare and what the families read


def test_prepare_writes_classify_with_goldens_and_image_labels(tmp_path: Path) -> None:
    params = folder_params(tmp_path)
    written = write_class_folders(params.raw_category_dir, n_good=10, n_per_defect=4)
    summary = prepare_datasets(params)
    layout = DatasetLayout(params.datasets_dir)
    assert prepared_datasets(params.datasets_dir) == ("classify", "image_labels")
    assert json.loads((params.datasets_dir / MANIFEST).read_text())["format"] == "folders"
    assert not layout.segment.exists() and not layout.coco.exists()
    split = json.loads((params.datasets_dir / "split.json").read_text())
    pool = {entry["name"]: entry["image"] for entry in split["golden_pool"]}
    goldens_of = {s["name"]: s["goldens"] for s in split["samples"]}
    assert len(pool) == golden_pool_size(10, 0.3) and summary["segment/golden_pool"] == len(pool)
    rows = {s: csv_rows(layout.classify_csv(s)) for s in ("train", "val")}
    labelled = {s: read_image_labels(layout.image_labels_csv(s)) for s in ("train", "val")}
    assert sum(map(len, rows.values())) == len(written.labels) - len(pool) == summary["data/records"]
    for s in ("train", "val"):
        assert summary[f"image_labels/{s}_rows"] == summary[f"classify/{s}_rows"] == len(rows[s])
        assert [r["name"] for r in labelled[s]] == [r["object_name"] for r in rows[s]]
        for row, label_row in zip(rows[s], labelled[s], strict=True):
            name = row["object_name"]
            assert row["label"] == ("PASS" if written.labels[name] == "good" else written.labels[name])
            assert label_row["label"] == written.labels[name]
            image = classify_image_path(layout.classify_images, row["input_path"], name, "UniformLight")
            assert label_row["image"] == image.relative_to(layout.root).as_posix()
            golden = classify_image_path(layout.classify_images, row["golden_path"], name, "UniformLight")
            with Image.open(image) as test, Image.open(golden) as reference:
                assert test.size == reference.size == (SIZE, SIZE)  # mixed source sizes, one prepared size
                source = params.raw_category_dir / pool[goldens_of[name][0]]
                expected = Image.open(source).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
                assert np.array_equal(np.asarray(reference), np.asarray(expected))  # the pool image drawn
    again = folder_params(tmp_path, artifacts="again")
    prepare_datasets(again)
    assert digest(again.datasets_dir) == digest(params.datasets_dir)


def test_the_plan_trains_cam_and_classify_and_skips_segment_and_mal(tmp_path: Path) -> None:
    planned = {stage.name for stage in plan(folder_params(tmp_path))}
    assert {"train_cam", "evaluate_cam", "export_cam", "train_classify", "evaluate_classify"} <= planned
    assert not {n for n in planned if n.endswith(("_segment", "_mal"))} and "label_cam" not in planned
    assert SOURCE_FORMATS["pairs"].written == ("segment", "classify", "coco")  # CAM reads segment/ there
    assert SOURCE_FORMATS["folders"].written == ("classify", "image_labels")


def test_cam_reads_the_image_labels_and_reports_no_masks(tmp_path: Path) -> None:
    from components.models.cam.data import CamDataset
    from components.models.cam.evaluate import evaluate_split
    from components.models.family import get_family

    params = folder_params(tmp_path, val_fraction=0.4)
    written = write_class_folders(params.raw_category_dir, n_good=10, n_per_defect=4)
    prepare_datasets(params)
    val = CamDataset(params.datasets_dir, "val", SIZE)
    assert val.kinds == [written.labels[n] for n in val.names] and not val.has_masks
    assert val.labels == [int(written.labels[n] != "good") for n in val.names]
    assert 0 < sum(val.labels) < len(val)  # unmasked defects are in, with their image label
    sample = val[0]
    assert sample["image"].shape == (3, SIZE, SIZE) and not sample["mask"].any() and sample["has_mask"] is False
    model = get_family("cam").build_model({"model": {"pretrained": "none"}})
    metrics = evaluate_split(model, params, "val", tmp_path / "pictures")
    assert not math.isnan(metrics["auroc"]) and metrics["defects"] == sum(val.labels)
    assert metrics["localised_images"] == 0 and math.isnan(metrics["box_iou"])
    assert (tmp_path / "pictures" / "val_scores.csv").is_file()
