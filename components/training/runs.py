"""Where a family's training run is recorded: a small JSON the later stages read, free of torch imports.

Evaluate, export and register attach their results to the MLflow run that trained the current
model; they find it here, so the register stage starts without importing Lightning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.config import Params
from components.models.family import ModelFamily

FamilyRef = ModelFamily | str


def training_run_path(params: Params, family: FamilyRef) -> Path:
    """``<artifacts>/runs/<family>_model.json``: the MLflow run of the model in :func:`model_dir`."""
    name = family if isinstance(family, str) else family.name
    return params.paths.artifacts_dir / "runs" / f"{name}_model.json"


def training_run(params: Params, family: FamilyRef) -> dict[str, Any]:
    """The MLflow run record of the family's current trained model; ``{}`` if absent.

    The one reader of that file: evaluate, export and register attach their results to this run.
    """
    path = training_run_path(params, family)
    return json.loads(path.read_text()) if path.is_file() else {}


__all__ = ["training_run", "training_run_path"]
