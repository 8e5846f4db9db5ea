"""``inspectops infer classify``: one part from files or folders, one image per light."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import ClassifyModelParams, ClassifyTrainParams
from components.imageio import write_png
from components.inference.classify_infer import InferInputError, find_capture, infer_classify
from components.models.changenet_classify.module import ChangeClassifyModule

LIGHTS = ("SolderLight", "WhiteLight")


def _capture(folder: Path, name: str, value: int) -> Path:
    for light in LIGHTS:
        write_png(folder / f"{name}_{light}.png", np.full((40, 40, 3), value, np.uint8))
    return folder


def test_find_capture_orders_lights_and_names_what_is_missing(tmp_path: Path) -> None:
    folder = _capture(tmp_path / "part", "C1", 50)
    assert [p.name for p in find_capture(folder, LIGHTS)] == ["C1_SolderLight.png", "C1_WhiteLight.png"]
    (folder / "C1_WhiteLight.png").unlink()
    with pytest.raises(InferInputError, match="no image for light 'WhiteLight'"):
        find_capture(folder, LIGHTS)
    with pytest.raises(InferInputError, match="one image given, but the model reads 2 lights"):
        find_capture(folder / "C1_SolderLight.png", LIGHTS)
    assert find_capture(folder / "C1_SolderLight.png", ("SolderLight",)) == [folder / "C1_SolderLight.png"]


def test_infer_scores_a_part_against_one_or_several_goldens(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ClassifyModelParams(pretrained="none", embed_dim=8, embed_dec=4, learnable_difference_modules=1)
    module = ChangeClassifyModule(
        model.model_dump(mode="json"), ClassifyTrainParams().model_dump(mode="json"), num_lights=2
    )
    test = _capture(tmp_path / "test", "C1", 90)
    one = _capture(tmp_path / "golden", "C1", 80)
    result = infer_classify(module.model, one, test, LIGHTS, input_size=32, threshold=0.5)
    assert 0.0 <= result.score <= 1.0 and result.goldens == 1
    assert result.verdict == ("DEFECT" if result.score > 0.5 else "PASS")
    several = tmp_path / "goldens"
    for k in range(3):
        _capture(several / str(k), "G", 80 + k)
    assert infer_classify(module.model, several, test, LIGHTS, input_size=32, threshold=0.5).goldens == 3
