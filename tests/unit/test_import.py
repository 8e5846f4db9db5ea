"""``inspectops data import``: checks, atomic copy, the CLI, and the round trip of prepared data.

The readers' own refusals are tested in ``test_sources.py``; here are the checks that need
pixels (Great Expectations source suite), what import copies, that a failed import leaves
the previous one untouched, and that what prepare writes from MVTec reads back unchanged
through ``tao-segment`` and ``tao-classify``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from components.cli import app
from components.config import Params, load_params, parse_params
from components.data.importer import SourceCheckError, import_source
from components.data.prepare import prepare_datasets
from components.data.sources.options import OPTIONS_FILE, SourceOptions
from components.data.sources.records import SourceError
from components.data.synth import synthesize_category
from tests.conftest import tiny_params_dict, write_params
from tests.source_fixtures import write_pairs, write_tao_classify, write_tao_segment


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- what import copies


def test_pairs_import_copies_the_used_files_and_records_the_options(tmp_path: Path) -> None:
    written = write_pairs(tmp_path / "src", n_good=2, n_boxed=2, n_masked=1, n_both=1)
    (tmp_path / "src" / "notes.txt").write_text("not part of the data")
    found = import_source("pairs", written.root, "line3", tmp_path / "data" / "pairs", written.options)
    target = tmp_path / "data" / "pairs" / "line3"
    copied = set(_digest(target))
    assert "notes.txt" not in copied
    assert {"p000_test.png", "p000_golden.png", "p002.txt", "p004_mask.png", OPTIONS_FILE} <= copied
    assert found["records"] == 6 and found["boxes"] == sum(len(b) for b in written.boxes.values())
    assert found["masks"] == 2
    recorded = json.loads((target / OPTIONS_FILE).read_text())
    assert recorded["format"] == "pairs" and recorded["options"]["test_pattern"] == "{id}_test.png"
    for name in ("p000_test.png", "p004_mask.png"):
        assert (target / name).read_bytes() == (written.root / name).read_bytes()


def test_tao_classify_import_reports_the_lights_found(tmp_path: Path) -> None:
    written = write_tao_classify(tmp_path / "src", lights=("SolderLight", "WhiteLight"))
    found = import_source("tao-classify", written.root, "boards", tmp_path / "out", written.options)
    assert found["lights"] == ["SolderLight", "WhiteLight"]
    assert found["splits"] == {"train": 6, "val": 3}


# ---------------------------------------------------------------- checks that need the pixels


def _break_box(root: Path) -> str:
    (root / "p002.txt").write_text("1,2,30,47,scratch\n3,4,39,60,scratch\n")
    return f"{root / 'p002.txt'}:2"


def _break_size(root: Path) -> str:
    Image.new("RGB", (41, 48)).save(root / "p001_golden.png")
    return str(root / "p001_golden.png")


def _break_mask(root: Path) -> str:
    mask = np.zeros((48, 40), np.uint8)
    mask[5:20, 5:20] = 128
    mask[25:30, 5:10] = 255
    Image.fromarray(mask).save(root / "p004_mask.png")
    return str(root / "p004_mask.png")


def _truncate(root: Path) -> str:
    path = root / "p000_test.png"
    path.write_bytes(path.read_bytes()[:60])
    return str(path)


def _empty_box(root: Path) -> str:
    (root / "p003.txt").write_text("10,10,10,20,dent\n")
    return f"{root / 'p003.txt'}:1"


@pytest.mark.parametrize(
    ("breaker", "words"),
    [
        (_break_box, "leaves the 40x48 image"),
        (_break_size, "is 41x48, its test image"),
        (_break_mask, "not binary"),
        (_truncate, "cannot decode"),
        (_empty_box, "is empty"),
    ],
)
def test_bad_pixels_fail_the_checks_naming_the_file_and_nothing_is_written(tmp_path: Path, breaker, words: str) -> None:
    written = write_pairs(tmp_path / "src", n_good=2, n_boxed=2, n_masked=1, n_both=1)
    where = breaker(written.root)
    out = tmp_path / "data" / "pairs"
    with pytest.raises(SourceCheckError) as raised:
        import_source("pairs", written.root, "line3", out, written.options)
    message = str(raised.value)
    assert where in message and words in message and "nothing was imported" in message
    assert not (out / "line3").exists()
    assert not any(out.iterdir()) if out.exists() else True


def test_a_failed_import_keeps_the_previous_one(tmp_path: Path) -> None:
    written = write_pairs(tmp_path / "src", n_good=2, n_boxed=2, n_masked=1, n_both=1)
    out = tmp_path / "data" / "pairs"
    import_source("pairs", written.root, "line3", out, written.options)
    before = _digest(out / "line3")
    _break_size(written.root)
    with pytest.raises(SourceCheckError):
        import_source("pairs", written.root, "line3", out, written.options)
    assert _digest(out / "line3") == before


def test_unknown_class_is_refused_with_its_line(tmp_path: Path) -> None:
    written = write_pairs(tmp_path / "src", n_good=1, n_boxed=2, n_masked=0, n_both=0)
    with pytest.raises(SourceError, match=r"p001\.txt:3: class 'scratch' is not a known class"):
        import_source("pairs", written.root, "x", tmp_path / "out", SourceOptions(classes=("dent",)))


def test_import_refuses_mvtec_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="data ingest"):
        import_source("mvtec", tmp_path, "x", tmp_path / "out")
    with pytest.raises(SourceError, match="--name"):
        import_source("pairs", tmp_path, "a/b", tmp_path / "out")


# ---------------------------------------------------------------- the command


def test_cli_imports_and_says_how_to_use_it(tmp_path: Path) -> None:
    written = write_tao_segment(tmp_path / "src")
    params_path = write_params(tmp_path / "project")
    result = CliRunner().invoke(
        app,
        ["data", "import", str(written.root), "--format", "tao-segment", "--name", "wafers", "-p", str(params_path)],
    )
    assert result.exit_code == 0, result.output
    overlay = tmp_path / "project" / "params.wafers.yaml"
    assert f"inspectops pipeline run --params {overlay}" in " ".join(result.output.split())
    assert (tmp_path / "project" / "data" / "tao-segment" / "wafers" / "list" / "train.txt").is_file()
    params = load_params(overlay)
    assert (params.data.source, params.data.category) == ("tao-segment", "wafers")
    assert params.paths == load_params(params_path).paths  # everything else comes from the params it extends


def test_cli_names_the_bad_list_entry_and_exits_1(tmp_path: Path) -> None:
    written = write_tao_segment(tmp_path / "src")
    (written.root / "B" / "part_004.png").unlink()
    params_path = write_params(tmp_path / "project")
    result = CliRunner().invoke(
        app, ["data", "import", str(written.root), "-f", "tao-segment", "--name", "wafers", "-p", str(params_path)]
    )
    assert result.exit_code == 1
    assert "train.txt:5" in result.output and "B/" in result.output
    assert not (tmp_path / "project" / "data" / "tao-segment" / "wafers").exists()


# ---------------------------------------------------------------- round trip


@pytest.fixture(scope="module")
def prepared_mvtec(tmp_path_factory: pytest.TempPathFactory) -> Params:
    root = tmp_path_factory.mktemp("roundtrip")
    params = parse_params(tiny_params_dict(root, data={"image_size": 48}))
    synthesize_category(params.raw_category_dir, params.data.category, params.synthetic, params.seed)
    prepare_datasets(params)
    return params


def _reprepare(params: Params, fmt: str, source: Path, root: Path) -> Path:
    import_source(fmt, source, "again", root / "data" / fmt)
    data = {"image_size": 48, "source": fmt, "category": "again"}
    if fmt == "tao-segment":  # one image per part: one light
        data["lighting_conditions"] = ["UniformLight"]
    raw = tiny_params_dict(root, data=data)
    again = parse_params(raw)
    prepare_datasets(again)
    return again.datasets_dir


def test_prepared_segment_data_round_trips_through_tao_segment(prepared_mvtec: Params, tmp_path: Path) -> None:
    first = prepared_mvtec.datasets_dir / "segment"
    second = _reprepare(prepared_mvtec, "tao-segment", first, tmp_path) / "segment"
    assert _digest(second) == _digest(first)


def test_prepared_classify_data_round_trips_through_tao_classify(prepared_mvtec: Params, tmp_path: Path) -> None:
    first = prepared_mvtec.datasets_dir / "classify"
    second = _reprepare(prepared_mvtec, "tao-classify", first, tmp_path) / "classify"
    assert _digest(second) == _digest(first)
