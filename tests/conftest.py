"""Shared fixtures: every test works in its own temporary folders and MLflow store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import Params, parse_params

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per xdist worker (and per process a test starts): the suite runs a worker
    per core, and two OpenMP pools on the same cores spin-wait for each other (about 9x slower)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"
        import torch

        torch.set_num_threads(1)


TINY_SYNTHETIC: dict[str, Any] = {
    "image_size": 64,
    "num_train_good": 20,
    "num_test_good": 6,
    "num_defect_per_kind": 4,
    "render_lighting": True,
}

TINY_MAL: dict[str, Any] = {
    "model": {"pretrained": "none", "crop_size": 64, "head_channels": 16},
    "train": {"epochs": 2, "batch_size": 4, "crf_iterations": 5},
    "eval": {"num_overlays": 2},
}
"""MAL at test size: every pipeline test runs it, so it must take seconds."""

TINY_CLASSIFY: dict[str, Any] = {
    "model": {"pretrained": "none", "embed_dim": 16, "embed_dec": 8, "learnable_difference_modules": 2},
    "train": {"epochs": 1, "batch_size": 8},
    "eval": {"num_misclassified": 2},
}
"""ChangeNet-Classification at test size, for the same reason."""

TINY_CAM: dict[str, Any] = {
    "model": {"pretrained": "none"},
    "train": {"epochs": 1, "batch_size": 8, "train_stages": 1},
    "eval": {"num_overlays": 2, "batch_size": 8},
}
"""The CAM classifier at test size, for the same reason."""


def tiny_params_dict(root: Path, **sections: Any) -> dict[str, Any]:
    """A params mapping whose data and artifacts live under ``root`` and whose data is tiny."""
    raw: dict[str, Any] = {
        "seed": 7,
        "paths": {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts")},
        "data": {"image_size": 64},
        "synthetic": dict(TINY_SYNTHETIC),
        "mal": {key: dict(value) for key, value in TINY_MAL.items()},
        "classify": {key: dict(value) for key, value in TINY_CLASSIFY.items()},
        "cam": {key: dict(value) for key, value in TINY_CAM.items()},
        "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "tests"},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return raw


def write_params(root: Path, **sections: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params_dict(root, **sections)))
    return path


@pytest.fixture
def tiny_params(tmp_path: Path) -> Params:
    return parse_params(tiny_params_dict(tmp_path))


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to the repository's mlflow.db."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow-default.db'}")
