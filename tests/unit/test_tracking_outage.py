"""A tracking server that does not answer: a bounded wait, then an error that names it (issue #31)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from components.cli import app
from components.config import TrackingParams, parse_params
from components.pipeline.runner import run_stage
from components.tracking_outage import (
    BACKOFF_ENV,
    RETRIES_ENV,
    TrackingUnreachableError,
    is_unreachable,
    redacted,
    retry_window_seconds,
)
from tests.conftest import tiny_params_dict, write_params
from tests.processes import free_port


@pytest.fixture(autouse=True)
def _own_retry_settings() -> Iterator[None]:
    """Each test starts with MLflow's retry settings unset and the process not marked as cut off, and
    leaves them as it found them (the code under test sets them, so monkeypatch would not restore them)."""
    names = (RETRIES_ENV, BACKOFF_ENV, "INSPECTOPS_TRACKING_UNREACHABLE")
    saved = {name: os.environ.pop(name, None) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_the_default_window_rides_out_a_restart_of_about_a_minute() -> None:
    assert retry_window_seconds(TrackingParams()) == 0 + 4 + 8 + 16 + 32
    assert retry_window_seconds(TrackingParams(http_retries=0)) == 0
    assert retry_window_seconds(TrackingParams(http_retries=10, http_backoff_seconds=120)) == 9 * 120  # capped


def test_a_refused_connection_is_recognised_through_mlflows_wrapping() -> None:
    os.environ[RETRIES_ENV] = "0"
    with pytest.raises(MlflowException) as caught:
        mlflow.MlflowClient(f"http://127.0.0.1:{free_port()}").search_experiments()
    assert is_unreachable(caught.value)
    assert not is_unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST: no such run"))
    assert not is_unreachable(ValueError("bad value"))


def test_credentials_never_reach_the_message() -> None:
    assert redacted("http://pipeline:s3cret-pw-123@mlflow.lan:5000/x") == "http://mlflow.lan:5000/x"
    assert redacted("http://mlflow.lan:5000") == "http://mlflow.lan:5000"
    assert redacted("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_a_stage_waits_a_bounded_time_then_fails_naming_the_server(tmp_path: Path) -> None:
    url = f"http://user:pw-never-shown@127.0.0.1:{free_port()}"
    raw = tiny_params_dict(tmp_path, tracking={"tracking_uri": url, "http_retries": 2, "http_backoff_seconds": 1})
    params = parse_params(raw)
    started = time.perf_counter()
    with pytest.raises(TrackingUnreachableError) as caught:
        run_stage("synth", params)
    waited = time.perf_counter() - started
    message = str(caught.value)
    assert message.startswith("stage 'synth': the MLflow tracking server at http://127.0.0.1:")
    assert "pw-never-shown" not in message and "2 retries over about 2 s" in message
    assert waited < 30  # 2 retries, waiting 0 and 2 s, not MLflow's default of about four minutes
    assert os.environ[RETRIES_ENV] == "0"  # the rest of this process fails at once


def test_the_cli_shows_the_message_without_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    path = write_params(
        tmp_path,
        tracking={"tracking_uri": f"http://127.0.0.1:{free_port()}", "http_retries": 0},
    )
    result = CliRunner().invoke(app, ["data", "synth", "--params", str(path)])
    assert result.exit_code == 1
    assert "the MLflow tracking server at http://127.0.0.1:" in result.output
    assert "Traceback" not in result.output
