"""The Optical Inspection CSV as ChangeNet-Classification reads it: rows, errors that name them, sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import ClassifyAugmentParams
from components.data.formats import DatasetLayout, classify_image_path, golden_image_paths
from components.imageio import write_png
from components.models.changenet_classify.data import (
    ClassifyDataError,
    ClassifyDataset,
    WeightedEpochSampler,
    sample_weights,
)

LIGHTS = ("LowAngleLight", "UniformLight")
SIZE = 16


def _make(root: Path, rows: list[tuple[str, str]], num_golden: int = 1, split: str = "train") -> DatasetLayout:
    """A classification split with ``rows`` of ``(object_name, label)``; every image a flat colour."""
    layout = DatasetLayout(root)
    lines = ["input_path,golden_path,label,object_name"]
    for k, (name, label) in enumerate(rows):
        lines.append(f"input/{name},golden/{name},{label},{name}")
        for j, light in enumerate(LIGHTS):
            write_png(
                classify_image_path(layout.classify_images, f"input/{name}", name, light),
                np.full((SIZE, SIZE, 3), 10 * k + j, np.uint8),
            )
            for path in golden_image_paths(layout.classify_images, f"golden/{name}", name, light, num_golden):
                write_png(path, np.full((SIZE, SIZE, 3), 100 + j, np.uint8))
    layout.classify_csv(split).parent.mkdir(parents=True, exist_ok=True)
    layout.classify_csv(split).write_text("\n".join(lines) + "\n")
    return layout


def test_samples_stack_lights_and_goldens(tmp_path: Path) -> None:
    _make(tmp_path, [("a", "PASS"), ("b", "bent_lead")], num_golden=2)
    dataset = ClassifyDataset(tmp_path, "train", LIGHTS, num_golden=2)
    first, second = dataset[0], dataset[1]
    assert first["test"].shape == (3, 2 * SIZE, SIZE) and first["golden"].shape == (2, 3, 2 * SIZE, SIZE)
    assert (first["label"], second["label"]) == (0, 1) and second["kind"] == "bent_lead"
    # light order: LowAngleLight on top (value 0), UniformLight below (value 1), for row 0
    assert torch.allclose(first["test"][:, :SIZE], torch.zeros(1)) and torch.allclose(
        first["test"][:, SIZE:], torch.tensor(1 / 255)
    )
    assert dataset.defects == [False, True]


def test_resize_to_input_size(tmp_path: Path) -> None:
    _make(tmp_path, [("a", "PASS")])
    sample = ClassifyDataset(tmp_path, "train", LIGHTS, input_size=32)[0]
    assert sample["test"].shape == (3, 64, 32)


def test_a_missing_lighting_image_names_the_row(tmp_path: Path) -> None:
    layout = _make(tmp_path, [("a", "PASS"), ("b", "cut_lead")])
    classify_image_path(layout.classify_images, "input/b", "b", "UniformLight").unlink()
    with pytest.raises(
        ClassifyDataError, match=r"train\.csv:3 \(object_name 'b'\): test image\(s\) missing: .*b_UniformLight\.png"
    ):
        ClassifyDataset(tmp_path, "train", LIGHTS)


def test_a_missing_golden_names_the_row(tmp_path: Path) -> None:
    layout = _make(tmp_path, [("a", "PASS")])
    classify_image_path(layout.classify_images, "golden/a", "a", "LowAngleLight").unlink()
    with pytest.raises(ClassifyDataError, match=r"train\.csv:2 \(object_name 'a'\): golden image\(s\) missing"):
        ClassifyDataset(tmp_path, "train", LIGHTS)


@pytest.mark.parametrize("label", ["pass", "OK", "good", ""])
def test_a_label_outside_pass_or_defect_names_the_row(tmp_path: Path, label: str) -> None:
    _make(tmp_path, [("a", "PASS"), ("b", label)])
    with pytest.raises(ClassifyDataError, match=r"train\.csv:3 \(object_name 'b'\).*(label|PASS)"):
        ClassifyDataset(tmp_path, "train", LIGHTS)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    layout = _make(tmp_path, [("a", "PASS")])
    layout.classify_csv("train").write_text("input_path,golden_path,object_name\ninput/a,golden/a,a\n")
    with pytest.raises(ClassifyDataError, match=r"missing column\(s\) \['label'\]"):
        ClassifyDataset(tmp_path, "train", LIGHTS)


def test_a_corrupt_image_names_the_row_and_file(tmp_path: Path) -> None:
    layout = _make(tmp_path, [("a", "PASS")])
    classify_image_path(layout.classify_images, "input/a", "a", "UniformLight").write_bytes(b"not a png")
    with pytest.raises(ClassifyDataError, match=r"train\.csv:2 \(object_name 'a'\).*a_UniformLight\.png"):
        ClassifyDataset(tmp_path, "train", LIGHTS)[0]


def test_augmentation_is_seeded_per_epoch_and_index(tmp_path: Path) -> None:
    _make(tmp_path, [("a", "PASS"), ("b", "misplaced")])
    augment = ClassifyAugmentParams(hflip=0.5, color_jitter=1.0, blur=0.5)
    one = ClassifyDataset(tmp_path, "train", LIGHTS, augment=augment, seed=3)
    two = ClassifyDataset(tmp_path, "train", LIGHTS, augment=augment, seed=3)
    assert torch.equal(one[(2, 1)]["test"], two[(2, 1)]["test"])
    assert not torch.equal(one[(2, 1)]["test"], one[(3, 1)]["test"])  # another epoch, another draw


def test_sampling_weights() -> None:
    defects = [False] * 8 + [True] * 2
    assert sample_weights(defects, "shuffle", 0.1) is None
    balanced = sample_weights(defects, "balanced", 0.1)
    assert balanced is not None and sum(balanced[8:]) == pytest.approx(sum(balanced[:8]))
    fpratio = sample_weights(defects, "fpratio", 0.1)
    assert fpratio is not None and fpratio[-1] == pytest.approx(8 / 2 * 0.1)
    sampler = WeightedEpochSampler(balanced, seed=1)
    sampler.set_epoch(4)
    drawn = [index for _, index in sampler]
    assert len(drawn) == 10 and drawn == [index for _, index in sampler]  # seeded: the same draw again
