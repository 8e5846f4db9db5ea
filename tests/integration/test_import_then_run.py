"""Your own data, first time right: each look-alike of public data goes ``data import`` then
``pipeline run --params <the overlay the import wrote>``, with no other flag, to completion.

The five look-alikes are what new users brought: a change-detection set with no good pair and no
light (LEVIR-CD in TAO's layout), template/test pairs with boxes only in nested folders
(DeepPCB), a multi-megapixel set whose defects are a few pixels wide, a four-light Optical
Inspection CSV, and class folders without masks. The base params file is the tests' tiny one
(models of test size), standing in for the repository's ``params.yaml``; every data-dependent
setting comes from the overlay alone. Each run must train exactly the families the import said
the data supports, and the summary must mark the others ``not applicable`` with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.config import FAMILIES, Params, load_params
from components.data.importer import import_source
from components.data.lookalikes.formats import write_boxes_only_pairs, write_change_detection, write_four_light_csv
from components.data.lookalikes.megapixel import write_megapixel
from components.data.sources.options import SourceOptions
from components.evaluation.stage import metrics_path
from components.export.onnx_export import read_sidecar
from components.export.stage import fp32_onnx_path, quantize_metrics_path
from components.pipeline.stages import STAGES
from components.pipeline.summary import NOT_APPLICABLE, build_rows
from flows.pipeline import pipeline_flow
from tests.conftest import write_params
from tests.integration.conftest import TINY_SEGMENT
from tests.source_fixtures import write_class_folders

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ONE_SEGMENT_EPOCH = {**TINY_SEGMENT, "train": {**TINY_SEGMENT["train"], "epochs": 1, "limit_train_batches": 8}}
"""One short epoch: a large pair holds several tiles, and each epoch would see them all."""
QUICK_BENCHMARK = {"batch_sizes": [1], "warmup_seconds": 0.0, "duration_seconds": 0.05, "min_iterations": 1}

STAGES_BY_NAME = {stage.name: stage for stage in STAGES}

Source = tuple[str, Path, SourceOptions]
"""``(format, folder, reader options)`` of a look-alike, as ``inspectops data import`` takes them."""


def _change_detection(root: Path) -> Source:
    written = write_change_detection(root)
    return written.format, written.root, written.options


def _boxes_only(root: Path) -> Source:
    written = write_boxes_only_pairs(root)
    return written.format, written.root, written.options


def _megapixel(root: Path) -> Source:
    # Just past the tiling line (short side over 2 x 256): the overlay must tile, not resize; defects 2-5 px
    # wide. The 2.2-megapixel case is benchmarks/segment_tiling.py's; here it only cost time.
    write_megapixel(root, n_train=3, n_val=2, size=(704, 544))
    return "tao-segment", root, SourceOptions()


def _four_lights(root: Path) -> Source:
    written = write_four_light_csv(root)
    return written.format, written.root, written.options


def _class_folders(root: Path) -> Source:
    written = write_class_folders(root, n_good=8, n_per_defect=4)
    return "folders", written.root, SourceOptions()


CASES: dict[str, tuple[Callable[[Path], Source], set[str], dict[str, Any]]] = {
    # name: (writer, families that must run, settings the overlay must hold)
    "change-detection": (
        _change_detection,
        {"mal", "segment"},
        {"segment.train.defect_share": None, "data.lighting_conditions": ("UniformLight",)},
    ),
    "boxes-only-pairs": (_boxes_only, {"mal", "segment", "classify"}, {"segment.train.labels": "mal"}),
    "megapixel": (_megapixel, set(FAMILIES), {"data.tiling.tile_size": 256, "data.image_size": 256}),
    "four-light-csv": (
        _four_lights,
        {"classify"},
        {"data.lighting_conditions": ("LowAngleLight", "SolderLight", "UniformLight", "WhiteLight")},
    ),
    "class-folders": (_class_folders, {"cam", "classify"}, {}),
}


def _get(params: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        params = getattr(params, part)
    return params


SEPARATE = ("megapixel",)
"""Run from their own file (``test_import_then_run_megapixel.py``), so a second pytest-xdist worker takes them."""


@pytest.mark.parametrize("case", sorted(set(CASES) - set(SEPARATE)))
def test_lookalike_runs_import_then_the_overlay_alone(prefect_server: None, tmp_path: Path, case: str) -> None:
    run_lookalike(case, tmp_path)


def run_lookalike(case: str, tmp_path: Path) -> None:
    """Import the look-alike ``case``, then run the pipeline on the overlay the import wrote, and check both."""
    make, families, settings = CASES[case]
    fmt, source, options = make(tmp_path / "source")
    base = write_params(tmp_path / "project", segment=ONE_SEGMENT_EPOCH, benchmark=QUICK_BENCHMARK)

    found = import_source(fmt, source, "line", tmp_path / "project" / "data" / fmt, options, params_path=base)
    overlay = Path(found["overlay"])
    params = load_params(overlay)
    assert set(params.pipeline.families) == families
    for dotted, value in settings.items():
        assert _get(params, dotted) == value, dotted

    results = pipeline_flow(params_path=str(overlay))

    ran = {stage.model_family for stage in STAGES if stage.name in results and stage.model_family}
    assert ran == families
    assert {"prepare", "validate"} <= set(results)
    for family in families:  # each family went the whole way: trained, evaluated, registered
        assert any(name.startswith("register_") and STAGES_BY_NAME[name].model_family == family for name in results)
    rows = {row.stage: row for row in build_rows([], {}, params)}
    assert {name for name, row in rows.items() if row.status == NOT_APPLICABLE} == set(FAMILIES) - families
    for family in set(FAMILIES) - families:
        assert rows[family].key_metrics == params.pipeline.not_applicable[family]
    CHECKS.get(case, lambda _: None)(params)


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _stored(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _no_good_pair_is_judged_on_iou(params: Params) -> None:
    """A change-detection set has no good part: the image verdict is not available (not a crash), no
    operating point ships, and quantization and the gate go by IoU."""
    stored = _stored(metrics_path(params, "segment"))
    assert math.isfinite(stored["val/iou"]) and stored["val/num_good_images"] == 0
    assert _missing(stored["val/image_auroc"]) and _missing(stored["val/image_threshold"])
    assert "val/image_defect_recall" not in stored
    assert read_sidecar(fp32_onnx_path(params, "segment"))["image_threshold"] is None
    assert math.isfinite(_stored(quantize_metrics_path(params, "segment"))["quantize/fp32/val_iou"])


def _four_lights_are_judged_per_part(params: Params) -> None:
    stored = _stored(metrics_path(params, "classify"))
    assert math.isfinite(stored["val/auroc"]) and stored["val/parts"] > 0


CHECKS: dict[str, Callable[[Params], None]] = {
    "change-detection": _no_good_pair_is_judged_on_iou,
    "four-light-csv": _four_lights_are_judged_per_part,
}
"""What a case's run must show beyond training every family it supports (read from the stages' outputs)."""
