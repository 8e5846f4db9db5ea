"""A team's own data, first time right: the import profiles the data, picks the model families it
supports and writes the params overlay that runs exactly those, each the way it can be fed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from components.config import ParamsError, load_params
from components.data.importer import import_source
from components.data.sources.records import SourceError
from components.pipeline.stages import plan
from components.pipeline.summary import NOT_APPLICABLE, not_applicable_rows
from tests.conftest import write_params
from tests.source_fixtures import Written, save, write_class_folders, write_coco, write_pairs, write_tao_segment

# ---------------------------------------------------------------- extends


def test_an_overlay_extends_its_base_and_its_keys_win(tmp_path: Path) -> None:
    base = write_params(tmp_path, data={"image_size": 64, "val_fraction": 0.25})
    overlay = tmp_path / "params.line.yaml"
    overlay.write_text("extends: params.yaml\ndata:\n  image_size: 96\n")
    params = load_params(overlay)
    assert params.data.image_size == 96  # the overlay's
    assert params.data.val_fraction == 0.25  # the base's, nested sections merge
    assert load_params(overlay, {"data.image_size": 128}).data.image_size == 128  # -S still wins
    assert load_params(base).data.image_size == 64


def test_extends_errors_name_the_files(tmp_path: Path) -> None:
    missing = tmp_path / "a.yaml"
    missing.write_text("extends: nowhere.yaml\n")
    with pytest.raises(ParamsError, match=r"nowhere.yaml: params file not found \(extended by .*a.yaml"):
        load_params(missing)
    (tmp_path / "b.yaml").write_text("extends: c.yaml\n")
    (tmp_path / "c.yaml").write_text("extends: b.yaml\n")
    with pytest.raises(ParamsError, match="cycle"):
        load_params(tmp_path / "b.yaml")
    (tmp_path / "d.yaml").write_text("extends: 3\n")
    with pytest.raises(ParamsError, match="extends must be the path"):
        load_params(tmp_path / "d.yaml")


# ---------------------------------------------------------------- pipeline.families


def test_families_left_out_are_skipped_with_their_reason(tmp_path: Path) -> None:
    params = load_params(
        write_params(
            tmp_path, pipeline={"families": ["cam", "segment"], "not_applicable": {"mal": "no boxes and no masks"}}
        )
    )
    planned = {stage.name for stage in plan(params)}
    assert {"train_cam", "label_cam", "train_segment", "register_segment"} <= planned
    assert not {name for name in planned if name.endswith(("_mal", "_classify"))}
    rows = {row.stage: row for row in not_applicable_rows(params)}
    assert set(rows) == {"mal", "classify"}
    assert rows["mal"].status == NOT_APPLICABLE and rows["mal"].key_metrics == "no boxes and no masks"
    assert "not in pipeline.families" in rows["classify"].key_metrics


def test_families_must_be_known_and_feed_each_other(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"pipeline\.families"):
        load_params(write_params(tmp_path, pipeline={"families": ["segment", "wafer"]}))
    with pytest.raises(ParamsError, match="labels: mal needs the mal family"):
        load_params(write_params(tmp_path, pipeline={"families": ["segment"]}, segment={"train": {"labels": "mal"}}))


def test_a_format_that_cannot_feed_a_family_gives_that_reason(tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path, data={"source": "coco", "lighting_conditions": ["UniformLight"]}))
    rows = {row.stage: row.key_metrics for row in not_applicable_rows(params)}
    assert set(rows) == {"cam", "segment", "classify"}
    assert rows["segment"] == "data.source coco feeds no segment dataset"
    assert rows["classify"] == "data.source coco feeds no classify dataset"
    assert rows["cam"].startswith("data.source coco feeds no")


# ---------------------------------------------------------------- import writes the overlay


def _import(tmp_path: Path, fmt: str, written: Written, **params_sections: Any) -> tuple[dict, dict]:
    base = write_params(tmp_path / "project", **params_sections)
    found = import_source(
        fmt, written.root, "line", tmp_path / "project" / "data" / fmt, written.options, params_path=base
    )
    overlay = Path(found["overlay"])
    assert overlay == tmp_path / "project" / "params.line.yaml"
    raw = yaml.safe_load(overlay.read_text())
    assert raw["extends"] == "params.yaml"
    return found, raw


def test_change_detection_without_good_pairs_or_lights(tmp_path: Path) -> None:
    """LEVIR-CD in TAO's layout: every pair changed, no lights. The overlay sets what three failed runs taught."""
    written = write_tao_segment(tmp_path / "src", n_train=6, n_val=3, size=(80, 64))
    for name in written.masks:  # every pair gets a change
        mask = np.zeros((64, 80), np.uint8)
        mask[10:20, 10 + len(name) % 5 : 30] = 255
        save(written.root / "label" / f"{name}.png", mask)
    found, raw = _import(tmp_path, "tao-segment", written)
    assert (found["good"], found["defect"]) == (0, 9)
    assert raw["data"]["lighting_conditions"] == ["UniformLight"]
    assert raw["data"]["image_size"] == 64  # the images' shorter side, not the base's
    assert raw["segment"]["train"] == {"defect_share": None}
    assert raw["pipeline"]["families"] == ["mal", "segment"]
    assert raw["pipeline"]["not_applicable"]["cam"].startswith("no good parts")
    assert "val_fraction" not in raw["data"]  # the lists give the split
    params = load_params(tmp_path / "project" / "params.line.yaml")
    assert params.segment.train.defect_share is None
    assert {stage.name for stage in plan(params)} >= {"prepare", "train_segment", "train_mal"}


def test_boxes_only_pairs_go_through_mal(tmp_path: Path) -> None:
    written = write_pairs(tmp_path / "src", n_good=4, n_boxed=5, n_masked=0, n_both=0, size=(72, 64))
    found, raw = _import(tmp_path, "pairs", written)
    assert found["families"]["segment"].startswith("boxes only: MAL labels them")
    assert raw["segment"]["train"] == {"labels": "mal"}
    assert raw["pipeline"]["families"] == ["mal", "segment", "classify"]
    assert raw["pipeline"]["not_applicable"]["cam"].startswith("0 defect(s) with a painted mask")
    assert raw["data"]["val_fraction"] == 0.3 and raw["seed"] == 7  # no split in the source: the base's seeded one
    header = (tmp_path / "project" / "params.line.yaml").read_text().split("extends:")[0]
    assert "segment: boxes only" in header and "Run it: inspectops pipeline run --params params.line.yaml" in header


def test_coco_feeds_mal_alone_and_says_why_not_the_others(tmp_path: Path) -> None:
    found, raw = _import(tmp_path, "coco", write_coco(tmp_path / "src"))
    assert raw["pipeline"]["families"] == ["mal"]
    assert raw["pipeline"]["not_applicable"]["segment"] == "no golden images to compare with"
    assert raw["pipeline"]["not_applicable"]["cam"] == "the coco format feeds no image_labels dataset"
    assert found["families"]["classify"].startswith("not applicable:")


def test_large_images_are_tiled_not_resized(tmp_path: Path) -> None:
    written = write_tao_segment(tmp_path / "src", n_train=4, n_val=2, size=(1200, 1000))
    _, raw = _import(tmp_path, "tao-segment", written)
    assert raw["data"]["image_size"] == 256
    assert raw["data"]["tiling"] == {"tile_size": 256, "overlap": 32}


def test_data_no_family_can_learn_from_is_refused_before_anything_is_copied(tmp_path: Path) -> None:
    written = write_pairs(tmp_path / "src", n_good=6, n_boxed=0, n_masked=0, n_both=0)
    base = write_params(tmp_path / "project")
    with pytest.raises(SourceError, match="no model family can learn from this data") as error:
        import_source("pairs", written.root, "line", tmp_path / "project" / "data" / "pairs", params_path=base)
    assert "cam: no defective parts" in str(error.value) and "segment: no masks and no boxes" in str(error.value)
    assert not (tmp_path / "project" / "data" / "pairs" / "line").exists()
    assert not (tmp_path / "project" / "params.line.yaml").exists()


def test_class_folders_get_goldens_from_good_so_the_classifier_applies(tmp_path: Path) -> None:
    found, raw = _import(tmp_path, "folders", write_class_folders(tmp_path / "src", n_good=6, n_per_defect=3))
    assert raw["pipeline"]["families"] == ["cam", "classify"]
    assert raw["pipeline"]["not_applicable"] == {"mal": "no boxes and no masks", "segment": "no masks and no boxes"}
    assert found["families"]["classify"].startswith("PASS/defect labels")


def test_large_boxes_only_pairs_are_resized_since_mal_masks_come_at_image_size(tmp_path: Path) -> None:
    written = write_pairs(tmp_path / "src", n_good=3, n_boxed=4, n_masked=0, n_both=0, size=(640, 640))
    _, raw = _import(tmp_path, "pairs", written)
    assert raw["segment"]["train"] == {"labels": "mal"}
    assert raw["data"]["image_size"] == 256 and "tiling" not in raw["data"]
