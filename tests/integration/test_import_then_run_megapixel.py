"""The multi-megapixel look-alike through ``data import`` and ``pipeline run`` (see ``test_import_then_run.py``):
its own file because it is the longest case, so that pytest-xdist runs it beside the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_import_then_run import run_lookalike

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_megapixel_lookalike_runs_import_then_the_overlay_alone(prefect_server: None, tmp_path: Path) -> None:
    run_lookalike("megapixel", tmp_path)
