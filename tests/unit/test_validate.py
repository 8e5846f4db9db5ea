"""Data validation (Great Expectations) on a tiny prepared-dataset tree written here with PIL.

The tree does not come from ``prepare``: these tests pin the validation rules to the
formats in :mod:`components.data.formats` alone. It holds 64 px images under two
lighting conditions, a 3-row train and 2-row val CSV, 3 + 2 segmentation entries, and
a raw ``ground_truth`` with two defect kinds (so the label set is checked too).
Each broken case copies the pristine tree, damages one thing and expects a failure
that names the file, the expectation and the row/line or file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.config import Params, parse_params
from components.data.formats import CLASSIFY_COLUMNS, DatasetLayout
from components.validation import format_failures, validate_datasets
from components.validation.tables import read_segment_entries

SIZE = 64
LIGHTS = ("SolderLight", "UniformLight")
DEFECT_KINDS = ("bent_lead", "cut_lead")
CSV_ROWS = {
    "train": [("PASS", "good_a"), ("bent_lead", "bent_b"), ("PASS", "good_c")],
    "val": [("PASS", "good_d"), ("cut_lead", "cut_e")],
}
SEGMENT_NAMES = {"train": ["seg_0", "seg_1", "seg_2"], "val": ["seg_3", "seg_4"]}


# --------------------------------------------------------------------------- the tiny tree


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _rgb(seed: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _mask(value: int = 255) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[8:24, 8:24] = value
    return mask


def _csv_text(rows: list[tuple[str, str]], columns: tuple[str, ...] = CLASSIFY_COLUMNS) -> str:
    """CSV in prepare's style (``input/<name>``, ``golden/<name>``); unknown columns get ``x``."""
    lines = [",".join(columns)]
    for label, name in rows:
        values = {"input_path": f"input/{name}", "golden_path": f"golden/{name}", "label": label, "object_name": name}
        lines.append(",".join(values.get(c, "x") for c in columns))
    return "\n".join(lines) + "\n"


def _write_classify(layout: DatasetLayout) -> None:
    for split, rows in CSV_ROWS.items():
        layout.classify.mkdir(parents=True, exist_ok=True)
        layout.classify_csv(split).write_text(_csv_text(rows))
        for index, (_, name) in enumerate(rows):
            for light in LIGHTS:
                _png(layout.classify_images / "input" / name / f"{name}_{light}.png", _rgb(index))
                _png(layout.classify_images / "golden" / name / f"{name}_{light}.png", _rgb(100 + index))


def _write_segment(layout: DatasetLayout) -> None:
    for split, names in SEGMENT_NAMES.items():
        for index, name in enumerate(names):
            _png(layout.segment_image("A", name), _rgb(index))
            _png(layout.segment_image("B", name), _rgb(200 + index))
            _png(layout.segment_image("label", name), _mask())
        layout.segment_list(split).parent.mkdir(parents=True, exist_ok=True)
        layout.segment_list(split).write_text("".join(f"{n}.png\n" for n in names))


def _params(root: Path) -> Params:
    return parse_params(
        {
            "paths": {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts")},
            "data": {"image_size": SIZE, "lighting_conditions": list(LIGHTS)},
        }
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per module; every test works on its own copy."""
    root = tmp_path_factory.mktemp("pristine")
    params = _params(root)
    layout = DatasetLayout(params.datasets_dir)
    _write_classify(layout)
    _write_segment(layout)
    for kind in DEFECT_KINDS:
        (params.raw_category_dir / "ground_truth" / kind).mkdir(parents=True)
    return root


@pytest.fixture
def params(pristine: Path, tmp_path: Path) -> Params:
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    return _params(tmp_path)


@pytest.fixture
def layout(params: Params) -> DatasetLayout:
    return DatasetLayout(params.datasets_dir)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _failures_about(failures: list[str], *fragments: str) -> list[str]:
    return [f for f in failures if all(fragment in f for fragment in fragments)]


# --------------------------------------------------------------------------- good data


def test_good_data_passes_writes_docs_and_summary_and_leaves_datasets_alone(
    params: Params, layout: DatasetLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree_digest(layout.root)

    report = validate_datasets(params)

    assert report.success, format_failures(report)
    assert report.failures == []
    assert _tree_digest(layout.root) == before
    assert report.data_docs_index == params.reports_dir / "validation" / "data_docs" / "index.html"
    assert report.data_docs_index.is_file()
    assert "<html" in report.data_docs_index.read_text().lower()
    assert list((report.data_docs_index.parent / "validations").rglob("*.html"))
    summary = json.loads(report.summary_path.read_text())
    assert summary["success"] is True
    assert set(summary["suites"]) == {"classify_csv", "classify_files", "segment_list"}
    assert all(v["success"] for v in summary["validations"])
    assert {v["name"] for v in summary["validations"]} == {
        "classify_train_csv",
        "classify_train_files",
        "classify_val_csv",
        "classify_val_files",
        "segment_train_list",
        "segment_val_list",
    }
    assert format_failures(report).startswith("Data validation passed")
    captured = capsys.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out


def test_relative_paths_as_in_params_yaml(params: Params, monkeypatch: pytest.MonkeyPatch) -> None:
    """params.yaml says ``artifacts``; GX's Data Docs site needs an absolute folder, which we derive."""
    monkeypatch.chdir(params.paths.artifacts_dir.parent)
    relative = parse_params(
        {
            "paths": {"data_dir": "data", "artifacts_dir": "artifacts"},
            "data": {"image_size": SIZE, "lighting_conditions": list(LIGHTS)},
        }
    )
    report = validate_datasets(relative)
    assert report.success, format_failures(report)
    assert Path("artifacts/reports/validation/data_docs/index.html").is_file()


def test_optional_test_split_is_validated_when_present(params: Params, layout: DatasetLayout) -> None:
    layout.classify_csv("test").write_text(_csv_text([("PASS", "good_a"), ("Nope", "bent_b")]))
    report = validate_datasets(params)
    assert _failures_about(
        report.failures, "test.csv", "expect_column_values_to_match_regex(label)", "row 2 (line 3): 'Nope'"
    )


# --------------------------------------------------------------------------- broken cases


def _rewrite_csv(columns: tuple[str, ...] | None = None, rows: list[tuple[str, str]] | None = None) -> Callable:
    def damage(layout: DatasetLayout) -> None:
        layout.classify_csv("train").write_text(_csv_text(rows or CSV_ROWS["train"], columns or CLASSIFY_COLUMNS))

    return damage


def _null_label(layout: DatasetLayout) -> None:
    path = layout.classify_csv("train")
    path.write_text(path.read_text().replace(",bent_lead,", ",,"))


def _unlink(relative: str) -> Callable:
    def damage(layout: DatasetLayout) -> None:
        (layout.root / relative).unlink()

    return damage


def _truncate_png(relative: str) -> Callable:
    """Keep the header and half the data: the header still parses, only a full decode fails."""

    def damage(layout: DatasetLayout) -> None:
        path = layout.root / relative
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return damage


def _resize(relative: str) -> Callable:
    def damage(layout: DatasetLayout) -> None:
        _png(layout.root / relative, _rgb(7, height=SIZE, width=48))

    return damage


def _grey_mask(layout: DatasetLayout) -> None:
    mask = _mask()
    mask[30:34, 30:34] = 128
    _png(layout.segment_image("label", "seg_1"), mask)


def _header_only_csv(layout: DatasetLayout) -> None:
    layout.classify_csv("train").write_text(",".join(CLASSIFY_COLUMNS) + "\n")


def _append_to_csv(text: str) -> Callable:
    def damage(layout: DatasetLayout) -> None:
        with layout.classify_csv("train").open("a") as handle:
            handle.write(text)

    return damage


def _write_list(split: str, text: str) -> Callable:
    def damage(layout: DatasetLayout) -> None:
        layout.segment_list(split).write_text(text)

    return damage


TRAIN_CSV = "classify/train.csv"
TRAIN_LIST = "segment/list/train.txt"
BROKEN_CASES: dict[str, tuple[Callable[[DatasetLayout], None], tuple[str, ...]]] = {
    "csv_missing_column": (
        _rewrite_csv(columns=("input_path", "golden_path", "object_name")),
        (TRAIN_CSV, "expect_table_columns_to_match_ordered_list", "missing column(s): label"),
    ),
    "csv_extra_column": (
        _rewrite_csv(columns=(*CLASSIFY_COLUMNS, "comment")),
        (TRAIN_CSV, "expect_table_columns_to_match_ordered_list", "unexpected column(s): comment"),
    ),
    "csv_columns_reordered": (
        _rewrite_csv(columns=("label", "input_path", "golden_path", "object_name")),
        (TRAIN_CSV, "expect_table_columns_to_match_ordered_list", "wrong order"),
    ),
    "csv_null_label": (_null_label, (TRAIN_CSV, "expect_column_values_to_not_be_null(label)", "row 2 (line 3): empty")),
    "csv_badly_shaped_label": (
        _rewrite_csv(rows=[("PASS", "good_a"), ("Bent Lead", "bent_b"), ("PASS", "good_c")]),
        (TRAIN_CSV, "expect_column_values_to_match_regex(label)", "row 2 (line 3): 'Bent Lead'"),
    ),
    "csv_unknown_defect_kind": (
        _rewrite_csv(rows=[("PASS", "good_a"), ("scratch", "bent_b"), ("PASS", "good_c")]),
        (TRAIN_CSV, "expect_column_values_to_be_in_set(label)", "row 2 (line 3): 'scratch'"),
    ),
    "csv_duplicate_object_name": (
        _rewrite_csv(rows=[("PASS", "good_a"), ("bent_lead", "bent_b"), ("PASS", "good_a")]),
        (
            TRAIN_CSV,
            "expect_column_values_to_be_unique(object_name)",
            "row 1 (line 2): 'good_a'",
            "row 3 (line 4): 'good_a'",
        ),
    ),
    "csv_header_only": (_header_only_csv, (TRAIN_CSV, "expect_table_row_count_to_be_between", "0 rows")),
    "input_light_missing": (
        _unlink("classify/images/input/bent_b/bent_b_UniformLight.png"),
        (
            TRAIN_CSV,
            "expect_column_values_to_be_in_set(input_files_present)",
            "row 2 (line 3): missing",
            "input/bent_b/bent_b_UniformLight.png",
        ),
    ),
    "golden_light_missing": (
        _unlink("classify/images/golden/cut_e/cut_e_SolderLight.png"),
        (
            "classify/val.csv",
            "expect_column_values_to_be_in_set(golden_files_present)",
            "row 2 (line 3): missing",
            "golden/cut_e/cut_e_SolderLight.png",
        ),
    ),
    "corrupt_png": (
        _truncate_png("classify/images/golden/good_c/good_c_UniformLight.png"),
        (
            TRAIN_CSV,
            "expect_column_values_to_be_in_set(image_decodable)",
            "row 3 (line 4): cannot decode",
            "golden/good_c/good_c_UniformLight.png",
        ),
    ),
    "wrong_size_image": (
        _resize("classify/images/input/good_a/good_a_SolderLight.png"),
        (
            TRAIN_CSV,
            "expect_column_values_to_be_in_set(image_width)",
            "row 1 (line 2): not 64x64:",
            "good_a_SolderLight.png (48x64)",
        ),
    ),
    "list_entry_missing_from_B": (
        _unlink("segment/B/seg_1.png"),
        (TRAIN_LIST, "expect_column_values_to_be_in_set(in_B)", "line 2: missing", "segment/B/seg_1.png"),
    ),
    "corrupt_mask": (
        _truncate_png("segment/label/seg_2.png"),
        (TRAIN_LIST, "expect_column_values_to_be_in_set(image_decodable)", "line 3: cannot decode", "label/seg_2.png"),
    ),
    "wrong_size_segment_image": (
        _resize("segment/A/seg_0.png"),
        (TRAIN_LIST, "expect_column_values_to_be_in_set(image_width)", "line 1: not 64x64:", "A/seg_0.png (48x64)"),
    ),
    "non_binary_mask": (
        _grey_mask,
        (TRAIN_LIST, "expect_column_values_to_be_in_set(mask_binary)", "line 2:", "label/seg_1.png"),
    ),
    "duplicate_list_entry": (
        _write_list("train", "seg_0.png\nseg_1.png\n\nseg_0.png\nseg_2.png\n"),
        (TRAIN_LIST, "expect_column_values_to_be_unique(name)", "line 1: 'seg_0'", "line 4: 'seg_0'"),
    ),
    "splits_overlap": (
        _write_list("val", "seg_3.png\nseg_1.png\n"),
        (
            "segment/list/val.txt",
            "expect_column_values_to_be_in_set(in_other_split)",
            "line 2: also listed in train.txt",
        ),
    ),
    "csv_row_with_extra_field": (
        _append_to_csv("input/x,golden/x,PASS,x,surplus\n"),
        (TRAIN_CSV, "line 5 has 5 fields but the header has 4"),
    ),
    "csv_repeated_header_column": (
        _rewrite_csv(columns=(*CLASSIFY_COLUMNS, "label")),
        (TRAIN_CSV, "header repeats column(s) label"),
    ),
    "csv_blank_line_keeps_line_numbers": (
        _append_to_csv("\ninput/y,golden/y,Bad,y\n"),
        (TRAIN_CSV, "expect_column_values_to_match_regex(label)", "row 4 (line 6): 'Bad'"),
    ),
    "missing_csv": (_unlink("classify/val.csv"), ("classify/val.csv", "dataset file not found")),
    "missing_list": (_unlink("segment/list/val.txt"), ("segment/list/val.txt", "dataset file not found")),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CASES))
def test_broken_dataset_fails_naming_file_expectation_and_rows(
    case: str, params: Params, layout: DatasetLayout
) -> None:
    damage, fragments = BROKEN_CASES[case]
    damage(layout)

    report = validate_datasets(params)

    assert not report.success
    assert _failures_about(report.failures, *fragments), "\n".join(report.failures)
    assert not any("Traceback" in f for f in report.failures)
    assert json.loads(report.summary_path.read_text())["success"] is False


def test_missing_column_is_reported_once_not_per_column_check(params: Params, layout: DatasetLayout) -> None:
    BROKEN_CASES["csv_missing_column"][0](layout)
    report = validate_datasets(params)
    assert len(_failures_about(report.failures, TRAIN_CSV)) == 1, report.failures
    label_checks = [
        e for o in report.outcomes if o.name == "classify_train_csv" for e in o.expectations if e.column == "label"
    ]
    assert label_checks and all(e.skipped for e in label_checks)


def test_summary_and_cli_text_name_failing_rows(params: Params, layout: DatasetLayout) -> None:
    _unlink("classify/images/input/bent_b/bent_b_UniformLight.png")(layout)
    _unlink("classify/images/input/good_c/good_c_SolderLight.png")(layout)

    report = validate_datasets(params)

    summary = json.loads(report.summary_path.read_text())
    assert summary["suites"]["classify_files"]["success"] is False
    assert summary["suites"]["segment_list"]["success"] is True
    files = next(v for v in summary["validations"] if v["name"] == "classify_train_files")
    presence = next(e for e in files["expectations"] if e["column"] == "input_files_present")
    assert presence["success"] is False
    assert presence["unexpected_count"] == 2
    assert [f.split(":")[0] for f in presence["first_failures"]] == ["row 2 (line 3)", "row 3 (line 4)"]
    assert "header" in files["index"]
    text = format_failures(report)
    assert text.startswith("Data validation failed: 1 problem(s).")
    assert "classify/train.csv" in text and "bent_b_UniformLight.png" in text and "good_c_SolderLight.png" in text


def test_label_shape_alone_is_checked_without_raw_category(params: Params, layout: DatasetLayout) -> None:
    shutil.rmtree(params.raw_category_dir)
    _rewrite_csv(rows=[("PASS", "good_a"), ("scratch", "bent_b"), ("PASS", "good_c")])(layout)
    assert validate_datasets(params).success


def test_package_import_does_not_load_great_expectations() -> None:
    """The CLI imports this package for ``--help``; GX's seconds-long import waits for first use."""
    code = "import sys, components.validation; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_list_entries_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("a.png\n\n  b.png \nc\n")
    entries = read_segment_entries(path)
    assert list(entries.index) == [1, 3, 4]
    assert list(entries["name"]) == ["a", "b", "c"]
