"""The commit a run records is ``-dirty`` only when an input changed, never because the pipeline wrote its outputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from components.tracking import git_commit


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_outputs_do_not_make_a_commit_dirty_but_inputs_do(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    for path, text in {
        "params.yaml": "seed: 42\n",
        "dvc.lock": "a\n",
        "artifacts/metrics/segment.json": "{}\n",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = _git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "dvc.lock").write_text("b\n")  # what a pipeline run rewrites
    (tmp_path / "artifacts/metrics/segment.json").write_text('{"val/iou": 0.8}\n')
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "params.yaml").write_text("seed: 1\n")  # an input
    assert git_commit(tmp_path) == f"{head}-dirty"
