"""The champion is what the line runs: the registered version loads and judges parts without torch.

On the tiny project: ChangeNet-Segmentation is trained, evaluated, exported, quantized and
registered as the pipeline does. Then the registered version is used the ways a line PC would:
``mlflow.pyfunc.load_model("models:/...@champion")`` in a process where torch cannot be imported,
``inspectops infer segment --model models:/...@champion``, and ``mlflow models serve`` over HTTP.
Each must give the verdicts of the local INT8 model at the shipped threshold.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from components.config import Params, parse_params
from components.data.formats import DatasetLayout, read_segment_list
from components.evaluation.stage import evaluate_stage
from components.export.stage import export_stage, quantize_stage
from components.models.family import get_family
from components.registry import register_model
from components.serving.bundle import write_bundle
from components.serving.runtime import BundleError, DeployBundle
from components.training.train import train_model
from tests.processes import free_port

pytestmark = pytest.mark.slow

NAME = "inspectops-changenet-segment"
CHAMPION_URI = f"models:/{NAME}@champion"


@pytest.fixture(scope="module")
def registered(prepared_project: Path) -> Params:
    """The tiny project's segmentation model, through every stage up to the registry."""
    raw = yaml.safe_load(prepared_project.read_text())
    raw["data"]["calibration_fraction"] = 0.2
    raw.setdefault("segment", {}).setdefault("eval", {})["image_threshold_split"] = "calibration"
    params = parse_params(raw)
    family = get_family("segment")
    train_model(params, family)
    evaluate_stage(params, family, splits=("val",))
    export_stage(params, family)
    quantize_stage(params, family, backend="onnxruntime")
    assert register_model(params, family)["register/promoted"] == 1.0
    return params


def _val_frame(params: Params) -> pd.DataFrame:
    """Every val pair as the model's input: base64 PNG bytes of the test and golden images."""
    layout = DatasetLayout(params.datasets_dir)
    names = read_segment_list(layout.segment_list("val"))

    def b64(kind: str, name: str) -> str:
        return base64.b64encode(layout.segment_image(kind, name).read_bytes()).decode("ascii")

    return pd.DataFrame({"test": [b64("A", n) for n in names], "golden": [b64("B", n) for n in names]})


def _local_int8(params: Params, tmp_path: Path) -> DeployBundle:
    """The local models (``artifacts/deploy``) as a bundle, at INT8: what the registry must reproduce."""
    folder = write_bundle(params, get_family("segment"), tmp_path / "local")
    return DeployBundle(folder, precision="int8")


def test_the_champion_loads_without_torch_and_gives_the_local_int8_verdicts(registered: Params, tmp_path: Path) -> None:
    frame = _val_frame(registered)
    frame_path = tmp_path / "parts.json"
    frame.to_json(frame_path, orient="split")
    script = f"""
import json, sys
sys.modules["torch"] = None  # any import of torch now raises
import mlflow, pandas as pd
mlflow.set_tracking_uri({registered.tracking.tracking_uri!r})
model = mlflow.pyfunc.load_model({CHAMPION_URI!r})
answers = model.predict(pd.read_json({str(frame_path)!r}, orient="split"))
print(json.dumps({{"answers": answers[["score", "verdict"]].to_dict("records"),
                  "torch": "torch" in sys.modules and sys.modules["torch"] is not None}}))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    local = _local_int8(registered, tmp_path).predict(frame.to_dict("records"))
    assert [a["verdict"] for a in result["answers"]] == [p.verdict for p in local]
    assert [a["score"] for a in result["answers"]] == pytest.approx([p.score for p in local], abs=1e-6)
    assert {p.verdict for p in local} <= {"PASS", "DEFECT"} and len(local) == len(frame)


def test_infer_reads_the_registry(registered: Params, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from components.cli import app

    layout = DatasetLayout(registered.datasets_dir)
    name = read_segment_list(layout.segment_list("val"))[0]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"tracking": {"tracking_uri": registered.tracking.tracking_uri}}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "infer", "segment", "--model", CHAMPION_URI, "--params", str(params_file),
            "--golden", str(layout.segment_image("B", name)), "--test", str(layout.segment_image("A", name)),
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    verdicts = (out / "verdicts.csv").read_text().splitlines()
    (local,) = _local_int8(registered, tmp_path).predict([_val_frame(registered).iloc[0].to_dict()])
    assert verdicts[1].split(",")[0] == name and verdicts[1].split(",")[2] == local.verdict
    assert (out / f"{name}_mask.png").is_file() and (out / f"{name}_overlay.png").is_file()


def test_mlflow_models_serve_answers_a_pair(registered: Params, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered.tracking.tracking_uri, "OMP_NUM_THREADS": "1"}
    # this interpreter's MLflow, whatever PATH holds (the README's `mlflow models serve` is the same CLI)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION_URI, "--env-manager", "local"]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "serve.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the scoring server did not start in 180 s"
            time.sleep(1)
        frame = _val_frame(registered).iloc[:2]
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            answers = json.loads(reply.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    local = _local_int8(registered, tmp_path).predict(frame.to_dict("records"))
    assert [a["verdict"] for a in answers] == [p.verdict for p in local]
    assert all(base64.b64decode(a["mask"])[:8] == b"\x89PNG\r\n\x1a\n" for a in answers)


def test_a_part_without_its_golden_is_refused_by_name(registered: Params, tmp_path: Path) -> None:
    bundle = _local_int8(registered, tmp_path)
    with pytest.raises(BundleError, match=r"row 0: missing column\(s\) \['golden'\]"):
        bundle.predict([{"test": _val_frame(registered).iloc[0]["test"]}])
    with pytest.raises(BundleError, match="row 0, column 'golden': not base64"):
        bundle.predict([{"test": _val_frame(registered).iloc[0]["test"], "golden": "not an image!"}])


def test_registering_the_same_training_again_makes_no_second_version(registered: Params) -> None:
    """A rerun of the register stage (after a tracking server went down part-way) finishes the version
    it made before instead of registering the model twice."""
    import mlflow

    again = register_model(registered, get_family("segment"))
    client = mlflow.MlflowClient(tracking_uri=registered.tracking.tracking_uri)
    versions = client.search_model_versions(f"name='{NAME}'")
    assert [str(v.version) for v in versions] == ["1"] and again["register/version"] == 1.0
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
