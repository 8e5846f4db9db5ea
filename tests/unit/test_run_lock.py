"""One pipeline run at a time per checkout (issue #31): a second run stops at once, names the first,
and a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.pipeline.run_lock import LOCK_NAME, PipelineBusyError, pipeline_lock

HOLDER = """
import sys
from pathlib import Path
from components.pipeline.run_lock import pipeline_lock
with pipeline_lock(Path(sys.argv[1]), params="/checkout/params.yaml", flow_run="nightly-retrain (1234)"):
    print("holding", flush=True)
    sys.stdin.read()
"""


def _start_holder(artifacts: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(artifacts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_run_stops_at_once_and_names_the_first(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    holder = _start_holder(artifacts)
    try:
        started = time.monotonic()
        with pytest.raises(PipelineBusyError) as refused, pipeline_lock(artifacts, params="second"):
            pytest.fail("the second run must not get the lock")
        assert time.monotonic() - started < 5  # at once, no waiting
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and "params /checkout/params.yaml" in message
        assert "nightly-retrain (1234)" in message and str(artifacts) in message
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    with pipeline_lock(artifacts, params="third") as path:  # released when the first finished
        assert path == artifacts / LOCK_NAME


def test_a_killed_run_leaves_no_stale_lock(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    holder = _start_holder(artifacts)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with pipeline_lock(artifacts, params="after the crash"):
        pass
    assert (artifacts / LOCK_NAME).read_text() == ""  # released and cleared
