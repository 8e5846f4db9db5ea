"""The default pull step reads the checkout from the worker's environment when the run starts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.pipeline.worker_checkout import WorkerCheckoutError, set_working_directory_from_worker_env

VARIABLE = "INSPECTOPS_WORKDIR"


@pytest.fixture(autouse=True)
def _restore_cwd() -> Iterator[None]:
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)


def _checkout(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "params.yaml").write_text("seed: 7\n")
    return root


def test_changes_into_the_checkout_and_returns_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = _checkout(tmp_path / "checkout")
    monkeypatch.setenv(VARIABLE, str(checkout))
    assert set_working_directory_from_worker_env(VARIABLE) == {"directory": os.getcwd()}
    assert Path.cwd().resolve() == checkout.resolve()


def test_reads_the_variable_when_called_not_earlier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, str(_checkout(tmp_path / "deployer")))
    worker = _checkout(tmp_path / "worker")
    monkeypatch.setenv(VARIABLE, str(worker))
    assert Path(set_working_directory_from_worker_env()["directory"]).resolve() == worker.resolve()


def test_other_variable_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = _checkout(tmp_path / "checkout")
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setenv("OTHER_WORKDIR", str(checkout))
    assert Path(set_working_directory_from_worker_env("OTHER_WORKDIR")["directory"]).resolve() == checkout.resolve()


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_variable_says_to_export_it_before_the_worker_starts(
    value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(VARIABLE, raising=False)
    else:
        monkeypatch.setenv(VARIABLE, value)
    cwd = os.getcwd()
    with pytest.raises(WorkerCheckoutError, match=r"\$INSPECTOPS_WORKDIR is not set on this worker") as error:
        set_working_directory_from_worker_env(VARIABLE)
    assert "export INSPECTOPS_WORKDIR=" in str(error.value) and "prefect worker start" in str(error.value)
    assert os.getcwd() == cwd


def test_missing_directory_names_variable_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(VARIABLE, str(missing))
    cwd = os.getcwd()
    with pytest.raises(WorkerCheckoutError, match="not a directory") as error:
        set_working_directory_from_worker_env(VARIABLE)
    assert VARIABLE in str(error.value) and str(missing) in str(error.value)
    assert os.getcwd() == cwd


def test_directory_without_params_yaml_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(VARIABLE, str(empty))
    cwd = os.getcwd()
    with pytest.raises(WorkerCheckoutError, match=r"holds no params\.yaml") as error:
        set_working_directory_from_worker_env(VARIABLE)
    assert VARIABLE in str(error.value) and str(empty) in str(error.value)
    assert os.getcwd() == cwd


def test_relative_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "some/checkout")
    with pytest.raises(WorkerCheckoutError, match="not an absolute path"):
        set_working_directory_from_worker_env(VARIABLE)


def test_imports_nothing_heavy() -> None:
    """The step runs before the flow is loaded: importing it must not pull in torch or mlflow."""
    code = (
        "import sys, components.pipeline.worker_checkout; "
        "print(sorted(m for m in ('torch', 'mlflow', 'lightning', 'prefect') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
