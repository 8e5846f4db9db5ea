"""One score per image from the change map, and the pass/defect verdict at a chosen threshold."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import parse_params
from components.models.changenet.image_score import IMAGE_SCORES, box_mean_max, image_scores
from components.models.changenet.metrics import SegmentationMetrics


def test_box_mean_max_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    change = rng.random((2, 12, 10)).astype(np.float32)
    brute = [max(c[i : i + 3, j : j + 3].mean() for i in range(10) for j in range(8)) for c in change]
    assert box_mean_max(change, 3) == pytest.approx(brute)


def test_smoothing_ranks_a_blob_above_a_stray_pixel() -> None:
    change = np.zeros((2, 32, 32), dtype=np.float32)
    change[0, 5, 5] = 1.0  # a good part with one hot pixel
    change[1, 10:18, 10:18] = 0.8  # a real defect, less confident per pixel
    scores = image_scores(change, threshold=0.5, window=5, topk_fraction=0.05)
    assert set(scores) == set(IMAGE_SCORES)
    assert scores["max"][0] > scores["max"][1]  # the plain maximum gets it wrong
    for rule in ("smooth_max", "topk_mean", "area"):
        assert scores[rule][1] > scores[rule][0], rule
    assert scores["area"][1] == pytest.approx(64 / 1024)
    assert scores["topk_mean"][1] == pytest.approx(0.8)


def test_image_scores_reject_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        image_scores(np.zeros((2, 2)), 0.5, 3, 0.1)


def _metrics(rule: str) -> SegmentationMetrics:
    metrics = SegmentationMetrics(image_score=rule, score_window=5, topk_fraction=0.05)
    change = np.zeros((4, 32, 32), dtype=np.float32)
    truth = np.zeros((4, 32, 32), dtype=np.int64)
    change[0, 5, 5] = 1.0  # good, stray pixel
    change[2, 10:18, 10:18] = 0.8  # defect, found
    truth[2, 10:18, 10:18] = 1
    truth[3, 0:4, 0:4] = 1  # defect, missed
    metrics.update(change, truth, ["good_test_000", "good_test_001", "cut_lead_test_000", "bent_lead_test_000"])
    return metrics


def test_metrics_report_every_rule_and_the_verdict() -> None:
    values = _metrics("smooth_max").compute(image_threshold=0.5)
    assert values["image_auroc/max"] == pytest.approx(0.375)  # the stray pixel outranks both defects
    assert values["image_auroc/smooth_max"] == pytest.approx(0.625)  # only the missed defect ranks low
    assert values["image_auroc"] == values["image_auroc/smooth_max"]
    assert values["image_defect_recall"] == pytest.approx(0.5)
    assert values["image_false_alarm_rate"] == pytest.approx(0.0)
    assert values["image_defect_recall/cut_lead"] == 1.0 and values["image_defect_recall/bent_lead"] == 0.0
    assert "image_defect_recall" not in _metrics("max").compute()  # no threshold: no verdict


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="image_score"):
        SegmentationMetrics(image_score="mean")


def test_threshold_on_test_split_needs_one(tmp_path) -> None:
    with pytest.raises(ValueError, match="image_threshold_split"):
        parse_params({"segment": {"eval": {"image_threshold_split": "test"}}})


def test_infer_writes_scores_and_verdicts(tmp_path) -> None:
    import torch

    from components.config import SegmentEvalParams, SegmentTrainParams
    from components.imageio import write_png
    from components.inference.segment_infer import infer_segment
    from components.models.changenet.module import ChangeSegmentModule

    module = ChangeSegmentModule(
        model={"backbone": "tf_efficientnet_lite0", "pretrained": "none", "embed_dim": 16, "upsample_dim": 0},
        train=SegmentTrainParams().model_dump(mode="json"),
    )
    checkpoint = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    rng = np.random.default_rng(0)
    for folder in ("golden", "test"):
        for name in ("a", "b"):
            write_png(tmp_path / folder / f"{name}.png", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    out = tmp_path / "out"
    infer_segment(
        checkpoint, tmp_path / "golden", tmp_path / "test", out, 64, verdict=SegmentEvalParams(), image_threshold=2.0
    )
    rows = (out / "verdicts.csv").read_text().splitlines()
    assert rows[0] == "name,image_score,verdict" and len(rows) == 3
    assert all(row.endswith(",PASS") for row in rows[1:])  # no probability exceeds 2
    assert (out / "a_mask.png").is_file()
