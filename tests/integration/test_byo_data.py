"""Bring your own data: every import format goes through import, prepare, validate and training.

Each case generates its source with :mod:`tests.source_fixtures`, imports it with
``import_source`` (the code behind ``inspectops data import``), runs the prepare and
validate stages, and trains the model families the format can feed; the stage plan must
skip the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.config import load_params
from components.data.importer import import_source
from components.models.family import get_family
from components.pipeline import steps
from components.pipeline.stages import plan
from components.training.train import train_model
from tests.conftest import write_params
from tests.integration.conftest import TINY_SEGMENT
from tests.source_fixtures import (
    Written,
    write_class_folders,
    write_coco,
    write_pairs,
    write_tao_classify,
    write_tao_segment,
)

pytestmark = pytest.mark.slow

ONE_SEGMENT_EPOCH = {**TINY_SEGMENT, "train": {**TINY_SEGMENT["train"], "epochs": 1}}

CASES: dict[str, tuple[Callable[[Path], Written], list[str], tuple[str, ...]]] = {
    "tao-segment": (
        lambda root: write_tao_segment(root, n_train=8, n_val=4, size=(80, 64)),
        ["UniformLight"],
        ("segment",),
    ),
    "tao-classify": (
        lambda root: write_tao_classify(root, n_train=8, n_val=4),
        ["UniformLight", "WhiteLight"],
        ("classify",),
    ),
    "coco": (write_coco, ["UniformLight"], ("mal",)),
    "pairs": (
        lambda root: write_pairs(root, n_good=6, n_boxed=2, n_masked=2, n_both=4, size=(72, 64)),
        ["UniformLight"],
        ("segment", "mal"),
    ),
    "folders": (
        lambda root: write_class_folders(root, n_good=10, n_per_defect=4, split_dirs=True, size=(72, 64)),
        ["UniformLight"],
        ("classify", "cam"),
    ),
}
FAMILY_DATASET = {"segment": "segment", "classify": "classify", "mal": "coco", "cam": "image_labels"}


def written_for(dataset: str, written: list[str]) -> bool:
    """Whether prepare gave ``dataset``: CAM's image labels come from the segmentation set when there is one."""
    return dataset in written or (dataset == "image_labels" and "segment" in written)


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_format_imports_prepares_validates_and_trains(tmp_path: Path, fmt: str) -> None:
    make, lights, families = CASES[fmt]
    written = make(tmp_path / "source")
    params_path = write_params(
        tmp_path / "project",
        data={"source": fmt, "category": "byo", "image_size": 64, "lighting_conditions": lights},
        segment=ONE_SEGMENT_EPOCH,
    )
    params = load_params(params_path)

    found = import_source(fmt, written.root, "byo", params.paths.data_dir / fmt, written.options)
    assert found["records"] == len(written.splits)
    assert (params.raw_category_dir / "inspectops-source.json").is_file()

    prepared = steps.prepare(params)
    manifest = json.loads((params.datasets_dir / "manifest.json").read_text())
    assert all(written_for(FAMILY_DATASET[f], manifest["datasets"]) for f in families)
    assert steps.validate(params)["validation/success"] == 1.0
    assert prepared

    planned = {stage.name for stage in plan(params)}
    for family in ("segment", "classify", "mal", "cam"):
        runs = f"train_{family}" in planned
        feeds = written_for(FAMILY_DATASET[family], manifest["datasets"])
        assert runs == feeds, f"{fmt}: train_{family} planned={runs}, dataset written={feeds}"

    for name in families:
        family = get_family(name)
        metrics: dict[str, Any] = train_model(params, family)
        best = metrics[f"train/best_{family.monitor.replace('/', '_')}"]
        assert not math.isnan(best), f"{fmt}/{name}: the monitored metric was never logged"
