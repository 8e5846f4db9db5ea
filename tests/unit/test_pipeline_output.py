"""What a person sees of a pipeline run: stage output streamed live, and the closing summary."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from components.config import parse_params
from components.pipeline import summary
from components.pipeline.runner import _lines, read_run_record, stream_command, write_run_record
from components.pipeline.stages import get_stage, plan
from components.tracking import run_url
from tests.conftest import tiny_params_dict


class _Pipe(io.BytesIO):
    """A readable stream with a real file descriptor, as a subprocess pipe has."""

    def __init__(self, tmp_path: Path, data: bytes) -> None:
        self._path = tmp_path / "pipe"
        self._path.write_bytes(data)
        self._handle = self._path.open("rb")
        super().__init__()

    def fileno(self) -> int:
        return self._handle.fileno()


def test_progress_bar_redraws_collapse_to_one_line_but_reach_the_terminal_whole(tmp_path: Path) -> None:
    data = (
        b"Running stage 'train':\n 10%|#   |\r 50%|##  |\r\x1b[A100%|####|\nepoch 1/3  val/iou 0.5\nno newline at end"
    )
    echo = io.BytesIO()
    lines = list(_lines(_Pipe(tmp_path, data), echo))
    assert lines == ["Running stage 'train':", "100%|####|", "epoch 1/3  val/iou 0.5", "no newline at end"]
    assert echo.getvalue() == data  # every redraw goes to the terminal as it came


def test_stream_command_passes_lines_on_and_returns_the_exit_code(tmp_path: Path) -> None:
    script = "import sys; print('one'); print('two', flush=True); sys.exit(3)"
    seen: list[str] = []
    code, tail = stream_command([sys.executable, "-c", script], tmp_path, {}, seen.append, echo=False)
    assert (code, seen, tail) == (3, ["one", "two"], ["one", "two"])


def _record(params, name: str, run_id: str, metrics: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    write_run_record(params, name, SimpleNamespace(run_id=run_id, experiment_id="4"), 12.5, metrics)


def test_run_records_live_outside_dvc_outputs_and_read_back(tmp_path: Path) -> None:
    params = parse_params(tiny_params_dict(tmp_path))
    _record(params, "train", "abc123", {"train/best_val_iou": 0.5})
    record = read_run_record(params, "train")
    assert (record["run_id"], record["experiment_id"], record["metrics"]) == (
        "abc123",
        "4",
        {"train/best_val_iou": 0.5},
    )
    assert read_run_record(params, "evaluate") == {}
    declared = {out for stage in plan(params) for out in stage.outs}
    assert not any("runs" in out or "reports" in out for out in declared)


def test_summary_says_what_ran_what_was_cached_and_links_the_runs(tmp_path: Path) -> None:
    params = parse_params(tiny_params_dict(tmp_path))
    stages = [get_stage(name) for name in ("prepare", "train_segment", "evaluate_segment", "register_segment")]
    _record(params, "prepare", "run-prep-0001", {"segment/train": 40.0})
    _record(params, "train_segment", "run-train-0001", {"train/best_val_iou": 0.61, "train/epochs": 3.0})
    _record(params, "register_segment", "run-reg-00001", {"register/version": 2.0, "register/promoted": 1.0})
    results = {
        "prepare": {"prepare/cached": 1.0, "prepare/wall_seconds": 1.2, "segment/train": 40.0, "segment/val": 17.0},
        "train_segment": {
            "train_segment/cached": 0.0,
            "train_segment/wall_seconds": 95.4,
            "train/best_val_iou": 0.61,
            "train/epochs": 3.0,
        },
    }
    rows = summary.build_rows(stages, results, params, failed_stage="evaluate_segment")
    by = {row.stage: row for row in rows}
    assert (by["prepare"].status, by["prepare"].run_is_earlier) == ("cached", True)
    assert by["prepare"].key_metrics == "segment/train 40, segment/val 17"
    assert (by["train_segment"].status, by["train_segment"].seconds) == ("ran", 95.4)
    assert by["train_segment"].key_metrics == "train/best_val_iou 0.61, train/epochs 3"
    assert by["train_segment"].run_url == run_url(params.tracking.tracking_uri or "", "4", "run-train-0001")
    assert (by["evaluate_segment"].status, by["evaluate_segment"].run_url) == ("failed", "")
    assert by["register_segment"].status == "not run"

    text = summary.render_text(rows, "m v2: promoted", "http://x/#/p", "sqlite:///mlflow.db")
    assert "run-trai" in text and "(earlier)" in text and "Registry: m v2: promoted" in text
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in text
    assert max(len(line) for line in text.splitlines() if line.startswith(("┃", "│"))) <= 120
    markdown = summary.render_markdown(rows, "", "http://x/#/p", "failed")
    assert "| train_segment | ran | 95 | train/best_val_iou 0.61, train/epochs 3 | [run](" in markdown
    assert "| prepare | cached | 1 |" in markdown and "[earlier run](" in markdown


def test_registry_decision_reads_the_gate_record(tmp_path: Path) -> None:
    from components.fsutil import write_json
    from components.registry import decision_path

    params = parse_params(tiny_params_dict(tmp_path))
    assert summary.registry_decision(params) == ""
    write_json(
        decision_path(params, "segment"),
        {"model": "m", "version": "3", "decision": {"promote": False, "reason": "val IoU 50 < champion v2 60"}},
    )
    assert summary.registry_decision(params) == "m v3: not promoted (val IoU 50 < champion v2 60)"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", "http://127.0.0.1:5000/#/experiments/1/runs/r"),
        ("http://mlflow:5000/", "http://mlflow:5000/#/experiments/1/runs/r"),
    ],
)
def test_run_links_point_at_the_ui(uri: str, expected: str) -> None:
    assert run_url(uri, "1", "r") == expected


def test_the_experiment_opens_on_training_runs_in_the_mlflow_ui(tmp_path: Path) -> None:
    import mlflow

    from components.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ensure_experiment

    params = parse_params(tiny_params_dict(tmp_path))
    experiment_id = ensure_experiment(params)
    assert mlflow.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    # An experiment made before the tag existed gets it on the next run.
    mlflow.MlflowClient().delete_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG)
    ensure_experiment(params)
    assert mlflow.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
