"""``benchmarks/segment_gpu.py`` runs where only the model's libraries are: MLflow, Prefect, DVC and
Great Expectations blocked, on generated data, with its CPU fallback standing in for the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.config import SyntheticParams
from components.data.synth import synthesize_category
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BLOCKED = ("mlflow", "prefect", "dvc", "great_expectations")
SCRIPT = REPO_ROOT / "benchmarks" / "segment_gpu.py"
# A GPU box's Python: the tracking libraries cannot be imported (None in sys.modules makes any
# import of them fail); the script runs as `python benchmarks/segment_gpu.py` would run it.
WRAPPER = f"""
import runpy, sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
sys.path.insert(0, {str(SCRIPT.parent)!r})
sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]
try:
    runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
finally:
    leaked = [name for name in {BLOCKED!r} if sys.modules.get(name) is not None]
    assert not leaked, f"imported {{leaked}}"
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # One thread: two OpenMP threads on a 2-core machine that is busy elsewhere spin-wait for each other.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def raw_transistor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated category in the MVTec AD layout (what `--data` points at on the GPU box)."""
    out = tmp_path_factory.mktemp("raw") / "transistor"
    settings = SyntheticParams(image_size=64, num_train_good=20, num_test_good=6, num_defect_per_kind=4)
    synthesize_category(out, "transistor", settings.model_copy(update={"render_lighting": False}), seed=7)
    return out


def test_the_gpu_script_trains_evaluates_and_times_without_tracking_libraries(
    raw_transistor: Path, tmp_path: Path
) -> None:
    results, results_md = tmp_path / "segment_gpu.json", tmp_path / "RESULTS.md"
    tiny = {
        "data.image_size": 64,
        "segment.model.pretrained": "none",
        "segment.model.embed_dim": 16,
        "segment.train.epochs": 1,
        "segment.train.batch_size": 4,
        "segment.train.limit_train_batches": 2,
        "segment.train.num_workers": 0,
        "segment.eval.batch_size": 8,
    }
    args = ["--device", "cpu", "--minutes", "6", "--reserve-minutes", "3", "--data", str(raw_transistor)]
    args += ["--workdir", str(tmp_path / "work"), "--results", str(results), "--results-md", str(results_md)]
    args += ["--batch-sizes", "2,1", "--warmup-seconds", "0", "--bench-seconds", "0.05", "--min-iterations", "2"]
    for variant in ("pytorch cpu fp32", "pytorch+cpu+bf16+channels-last", "onnxruntime cpu", "pytorch cuda fp16"):
        args += ["--variant", variant]
    for key, value in tiny.items():
        args += ["--set", f"{key}={value}"]

    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    saved = json.loads(results.read_text())
    assert set(saved) >= {"command", "machine", "model", "split", "train", "val", "benchmark", "seconds"}
    assert saved["machine"]["device"] == "cpu" and saved["machine"]["device_name"]
    assert saved["model"]["embed_dim"] == 16 and saved["split"]["train"] > 0 and saved["split"]["val"] > 0
    train = saved["train"]
    assert train["epochs"] == 1 and train["stopped_by"] == "epochs" and train["budget_minutes"] > 0
    assert Path(train["checkpoint"]).is_file()
    assert {"iou", "f1", "precision", "recall", "image_auroc"} <= set(saved["val"])
    assert set(saved["seconds"]) >= {"ingest", "prepare", "train", "evaluate", "benchmark", "total"}

    bench = saved["benchmark"]
    assert bench["batch_sizes"] == [2, 1]
    rows = {row["variant"]: row for row in bench["variants"]}
    assert list(rows) == [
        "pytorch cpu fp32",
        "pytorch cpu bf16 channels-last",
        "onnxruntime CPU EP fp32",  # the precision read from the exported graph
        "pytorch cuda fp16",
    ]
    for label in ("pytorch cpu fp32", "pytorch cpu bf16 channels-last", "onnxruntime CPU EP fp32"):
        assert rows[label]["status"] == "ok", rows[label]["message"]
        records = rows[label]["results"]
        assert [r["batch_size"] for r in records] == [2, 1]
        assert all(r["pairs_per_second"] > 0 and r["variant"] == label for r in records)
        assert all(r["device"] == saved["machine"]["device_name"] for r in records)
    cuda = rows["pytorch cuda fp16"]
    assert cuda["status"] == "unavailable" and "needs an NVIDIA GPU" in cuda["message"]
    assert "results" not in cuda  # no number without the device

    section = results_md.read_text()
    assert "<!-- segment_gpu:begin -->" in section and "<!-- segment_gpu:end -->" in section
    assert "| pytorch cpu bf16 channels-last |" in section
    assert "| pytorch cuda fp16 | – | – | – | – | – | unavailable:" in section


def test_the_gpu_script_refuses_cuda_without_a_gpu(raw_transistor: Path, tmp_path: Path) -> None:
    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    except ImportError:
        pass
    results = tmp_path / "segment_gpu.json"
    done = _run(["--data", str(raw_transistor), "--workdir", str(tmp_path / "w"), "--results", str(results)], tmp_path)
    assert done.returncode == 1
    assert "error: benchmarks/segment_gpu.py --device cuda needs an NVIDIA GPU" in done.stderr
    assert "Traceback" not in done.stderr
    assert not results.exists()


def test_recipes_train_side_by_side_then_the_chosen_one_is_timed(raw_transistor: Path, tmp_path: Path) -> None:
    """``segment_gpu_recipes.sh`` (its CPU smoke run): every recipe trains, one is chosen and timed, and
    the JSONs render as one RESULTS.md section with a row per recipe."""
    out = tmp_path / "out"
    tiny = (
        "--set data.image_size=64 --set segment.model.pretrained=none --set segment.model.embed_dim=16 "
        "--set segment.train.epochs=1 --set segment.train.batch_size=4 --set segment.train.limit_train_batches=2 "
        "--set segment.train.num_workers=0 --batch-sizes 2 --warmup-seconds 0 --bench-seconds 0.05 --min-iterations 2"
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHON": sys.executable,
        "OUT": str(out),
        "WORK": str(tmp_path / "work"),
        "DATA": str(raw_transistor),
        "DEVICE": "cpu",
        "TRAIN_MINUTES": "3",
        "TIME_MINUTES": "2",
        "DEADLINE_MINUTES": "0",  # no time for the second timing: the script must skip it, not fail
        "EXTRA": tiny,
    }
    script = REPO_ROOT / "benchmarks" / "segment_gpu_recipes.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + (out / "log.txt").read_text()[-3000:]

    recipes = sorted(path.name for path in out.glob("recipe-*.json"))
    assert recipes == ["recipe-fine16_clip.json", "recipe-light64_ema.json", "recipe-light64_ema_clip.json"]
    light = json.loads((out / "recipe-light64_ema.json").read_text())
    assert light["model"]["upsample_dim"] == 64 and light["train_settings"]["ema"]["decay"] == 0.998
    fine = json.loads((out / "recipe-fine16_clip.json").read_text())
    assert (fine["model"]["upsample_dim"], fine["model"]["fine_dim"]) == (0, 16)
    assert fine["train_settings"]["grad_clip_norm"] == 1.0
    assert fine["train_settings"]["dice_on_good_batches"] is False  # params.yaml's recipe at the overlay's width
    assert light["train_settings"]["dice_on_good_batches"] is True  # the 85.66 run, as gpu-retrain.yaml keeps it
    assert "benchmark" not in light  # trained side by side: never timed there
    assert [point["epoch"] for point in light["train"]["val_curve"]] == [0]
    timed = list(out.glob("timing-*.json"))
    assert len(timed) == 1, "exactly one recipe is timed when no time is left for a second"
    timing = json.loads(timed[0].read_text())
    assert timing["train"]["skipped"] == "--checkpoint given"
    assert any(row["status"] == "ok" for row in timing["benchmark"]["variants"])

    rendered = subprocess.run(
        [sys.executable, str(SCRIPT), "--no-results-md", "--render-only", *map(str, sorted(out.glob("*.json")))],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    section = rendered.stdout
    assert section.count("| 16 / ") == 3  # a row per recipe (embed / full-resolution width)
    assert "`model.upsample_dim=64`" in section  # a recipe is named by what it changed
    assert "| pytorch cpu fp32 |" in section
