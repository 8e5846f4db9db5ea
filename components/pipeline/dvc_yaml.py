"""Render ``dvc.yaml`` from the stage graph, so DVC and Prefect can never disagree on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.pipeline.stages import STAGES, Stage

HEADER = (
    "# Generated from components/pipeline/stages.py by `inspectops pipeline dvc-yaml`.\n"
    "# Do not edit by hand: change the stage graph and re-render (a test checks they match).\n"
)


def _stage_entry(stage: Stage) -> dict[str, Any]:
    entry: dict[str, Any] = {"desc": stage.description, "cmd": f"{stage.command} --params params.yaml"}
    if stage.deps:
        entry["deps"] = list(stage.deps)
    if stage.params:
        entry["params"] = list(stage.params)
    if stage.outs:
        entry["outs"] = list(stage.outs)
    if stage.metrics:
        entry["metrics"] = [{path: {"cache": False}} for path in stage.metrics]
    if stage.plots:
        entry["plots"] = [{path: {"cache": False}} for path in stage.plots]
    return entry


def render() -> str:
    document = {"stages": {stage.name: _stage_entry(stage) for stage in STAGES}}
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=120)


def write(path: Path = Path("dvc.yaml")) -> Path:
    from components.fsutil import atomic_file

    with atomic_file(path) as handle:
        handle.write(render())
    return path


def is_current(path: Path = Path("dvc.yaml")) -> bool:
    return path.is_file() and path.read_text() == render()
