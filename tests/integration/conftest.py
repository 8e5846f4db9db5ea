"""Fixtures for multi-stage tests: a prepared tiny synthetic dataset and a Prefect test server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.config import Params, load_params
from components.pipeline import steps
from tests.conftest import write_params

TINY_SEGMENT = {
    "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "none", "embed_dim": 32},
    "train": {
        "epochs": 2,
        "batch_size": 4,
        "lr": 0.002,
        "checkpoint": "last",  # as params.yaml
        "augment": {"random_resized_crop": 0.0, "blur": 0.0},
    },
    "eval": {"num_overlays": 2, "batch_size": 4},
}


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A params file whose synthetic data is synthesised, prepared and validated once per session."""
    root = tmp_path_factory.mktemp("project")
    params_path = write_params(root, segment=TINY_SEGMENT)
    params = load_params(params_path)
    steps.synth(params)
    steps.prepare(params)
    steps.validate(params)
    return params_path


@pytest.fixture
def prepared_params(prepared_project: Path) -> Params:
    return load_params(prepared_project)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect server for the session (it takes ~10 s to start)."""
    results = tmp_path_factory.mktemp("prefect-results")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(results)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
