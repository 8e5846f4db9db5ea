from pathlib import Path

import pytest
import yaml

from components.config import parse_params
from components.pipeline import dvc_yaml
from components.pipeline.stages import STAGES, plan, resolve, resolve_path, upstream
from tests.conftest import REPO_ROOT


def test_committed_dvc_yaml_matches_stage_graph() -> None:
    assert dvc_yaml.is_current(REPO_ROOT / "dvc.yaml"), "run `inspectops pipeline dvc-yaml` and commit dvc.yaml"


def test_dvc_yaml_declares_every_stage_with_its_command() -> None:
    document = yaml.safe_load(dvc_yaml.render())
    assert list(document["stages"]) == [stage.name for stage in STAGES]
    for stage in STAGES:
        entry = document["stages"][stage.name]
        assert entry["cmd"].startswith(stage.command)
        assert "--params params.yaml" in entry["cmd"]


def test_templates_resolve_to_the_paths_the_components_use() -> None:
    params = parse_params({"data": {"source": "mvtec", "category": "screw"}})
    prepare = next(s for s in STAGES if s.name == "prepare")
    assert resolve_path(prepare.deps[0], params) == params.raw_category_dir
    assert resolve_path(prepare.outs[0], params) == params.datasets_dir
    assert resolve_path(prepare.metrics[0], params) == params.metrics_dir / "data.json"
    assert resolve("${data.category}-${seed}", params) == "screw-42"


def test_graph_order_is_derived_from_deps_and_outs() -> None:
    synthetic = parse_params({})
    mvtec = parse_params({"data": {"source": "mvtec"}})
    by_name = {s.name: s for s in STAGES}
    assert upstream(by_name["prepare"], synthetic) == ["synth"]
    assert upstream(by_name["prepare"], mvtec) == []  # mvtec data comes from ingest + data.dvc
    assert upstream(by_name["validate"], synthetic) == ["prepare"]
    assert [s.name for s in plan(synthetic)][:3] == ["synth", "prepare", "validate"]
    assert "synth" not in [s.name for s in plan(mvtec)]
    assert [s.name for s in plan(synthetic, until="prepare")] == ["synth", "prepare"]


def test_stage_entrypoints_and_code_deps_exist() -> None:
    for stage in STAGES:
        _module, attr = stage.entrypoint.split(":")
        assert attr, stage.name
        for dep in stage.deps:
            if dep.startswith("components/"):
                assert (REPO_ROOT / dep).exists(), f"{stage.name}: dependency {dep} does not exist"
        assert callable(stage.function())


def test_stage_outputs_live_outside_the_dvc_tracked_raw_folder() -> None:
    tracked = yaml.safe_load((REPO_ROOT / "data.dvc").read_text())["outs"][0]["path"]
    params = parse_params({})
    for stage in STAGES:
        for out in stage.outs:
            path = resolve(out, params)
            assert not Path(path).is_relative_to(tracked), f"{stage.name} writes inside {tracked}"


TIMING = ("seconds", "per_second", "_ms", "run_id", "version")


def test_dvc_outputs_hold_no_run_ids_or_timings() -> None:
    """DVC hashes outs and metrics into dvc.lock, and git keeps the metrics: whatever differs from one
    run to the next (timings, run ids, registry versions) must live in MLflow and the reports instead."""
    params = parse_params({})
    for stage in STAGES:
        for out in (*stage.outs, *stage.metrics):
            path = resolve(out, params)
            assert "/reports" not in path and "/runs" not in path, f"{stage.name}: {path} is for people, not DVC"
    committed = sorted((REPO_ROOT / "artifacts" / "metrics").glob("*.json"))
    declared = {Path(resolve(m, params)).name for stage in STAGES for m in stage.metrics}
    assert {path.name for path in committed} == declared, "commit artifacts/metrics from a fresh pipeline run"
    for path in committed:
        keys = yaml.safe_load(path.read_text())
        assert not [k for k in keys if k.endswith(TIMING)], f"{path.name} holds run-dependent numbers"


def test_git_keeps_the_metrics_and_ignores_the_rest_of_artifacts() -> None:
    import subprocess

    def ignored(path: str) -> bool:
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT, check=False)
        return done.returncode == 0

    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert not ignored("artifacts/metrics/segment.json")
    for path in ("artifacts/models/segment/best.ckpt", "artifacts/runs/train.json", "artifacts/reports/x.md"):
        assert ignored(path), path


def test_every_stage_declares_an_output_so_a_fresh_clone_runs_it() -> None:
    """DVC skips a stage whose inputs match dvc.lock and whose outputs exist or sit in the cache.
    With deterministic outputs a fresh clone's inputs match the committed lock, so a stage with
    no output (register, benchmark) would never run there; a missing output makes DVC run it."""
    assert all(stage.outs for stage in STAGES), [stage.name for stage in STAGES if not stage.outs]


def test_a_source_skips_the_stages_whose_datasets_it_cannot_feed() -> None:
    by_name = {s.name: s for s in STAGES}
    coco = parse_params({"data": {"source": "coco"}})
    tao_segment = parse_params({"data": {"source": "tao-segment"}})
    # label_mal writes one mask per segmentation train pair: a COCO-only source cannot feed it.
    assert "segment" in (by_name["label_mal"].skip_reason(coco) or "")
    assert by_name["train_mal"].skip_reason(coco) is None
    assert by_name["label_cam"].skip_reason(coco) is not None
    assert by_name["label_mal"].skip_reason(tao_segment) is None


def test_mal_chain_switch_is_wired_through_the_graph() -> None:
    """With mal.boxes: cam, MAL learns from and labels the CAM boxes: DVC must order them first."""
    params = parse_params({})
    by_name = {s.name: s for s in STAGES}
    assert "label_cam" in upstream(by_name["train_mal"], params)
    assert "label_cam" in upstream(by_name["label_mal"], params)
    assert "mal.boxes" in by_name["train_mal"].params and "mal.boxes" in by_name["label_mal"].params
    order = [s.name for s in plan(params)]
    assert order.index("label_cam") < order.index("train_mal") < order.index("label_mal") < order.index("train_segment")


def test_skipped_stages_leave_empty_folders_for_their_dependents(tmp_path: Path) -> None:
    from components.pipeline.runner import stand_in_for_skipped_outputs

    by_name = {s.name: s for s in STAGES}
    coco = parse_params({"data": {"source": "coco"}})
    made = stand_in_for_skipped_outputs(by_name["train_mal"], coco, tmp_path)
    cam_boxes = tmp_path / resolve_path("${paths.artifacts_dir}/labels/cam", coco)
    assert made == [cam_boxes] and cam_boxes.is_dir() and not any(cam_boxes.iterdir())
    # a source that feeds every dataset runs label_cam itself: nothing is stood in for
    assert stand_in_for_skipped_outputs(by_name["train_mal"], parse_params({}), tmp_path / "full") == []
    # outputs of stages that run are never faked, even when missing
    assert not (tmp_path / resolve_path("${paths.artifacts_dir}/datasets", coco)).exists()


def test_every_param_a_stage_declares_is_in_params_yaml() -> None:
    """DVC reads the declared keys from params.yaml itself (no defaults): a missing key fails `dvc repro`."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for stage in STAGES:
        for key in stage.params:
            node = raw
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{stage.name}: params.yaml has no {key!r}"
                node = node[part]
