"""Segmentation metrics against hand-computed answers on tiny masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from components.evaluation.visualize import _plot_with_pil, mask_outline, overlay
from components.models.changenet.metrics import (
    SegmentationMetrics,
    best_f1_threshold,
    format_metrics,
    parse_sample_name,
    rank_auroc,
    to_percent,
)

# 4x4 case: truth is the centre 2x2 square; four pixels reach 0.5.
TRUTH = np.array(
    [
        [0, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ]
)
PROB = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.9, 0.8, 0.7],
        [0.0, 0.6, 0.2, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
)
# => TP 3 (0.9, 0.8, 0.6), FP 1 (0.7), FN 1 (0.2), TN 11.


def _one(prob: np.ndarray) -> np.ndarray:
    return prob[None].astype(np.float32)


def test_hand_computed_pixel_metrics() -> None:
    metrics = SegmentationMetrics()
    metrics.update(_one(PROB), TRUTH[None], ["bent_lead_test_001"])
    m = metrics.compute()
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["iou"] == pytest.approx(3 / 5)
    assert m["oa"] == pytest.approx(14 / 16)
    # Background: TP 11, FP 1 (the missed change pixel), FN 1.
    assert m["class_iou/0"] == pytest.approx(11 / 13)
    assert m["class_f1/0"] == pytest.approx(22 / 24)
    assert m["miou"] == pytest.approx((11 / 13 + 3 / 5) / 2)
    assert m["mf1"] == pytest.approx((22 / 24 + 3 / 4) / 2)
    assert m["iou/bent_lead"] == pytest.approx(3 / 5)
    assert m["num_images"] == 1 and m["num_defect_images"] == 1 and m["num_good_images"] == 0
    assert "good_fp_pixels" not in m


def test_class_probabilities_give_same_answer_as_change_probability() -> None:
    binary = SegmentationMetrics()
    binary.update(_one(PROB), TRUTH[None])
    two_class = SegmentationMetrics()
    two_class.update(np.stack([1 - PROB, PROB])[None].astype(np.float32), TRUTH[None])
    assert _same(binary.compute(), two_class.compute())


def test_multiclass_uses_argmax_and_collapses_change() -> None:
    # Class 2 predicted where the truth is class 1 still counts as a detected change.
    prob = np.zeros((1, 3, 1, 3), dtype=np.float32)
    prob[0, :, 0, 0] = [0.8, 0.1, 0.1]  # pred 0, truth 0
    prob[0, :, 0, 1] = [0.1, 0.2, 0.7]  # pred 2, truth 1
    prob[0, :, 0, 2] = [0.1, 0.7, 0.2]  # pred 1, truth 1
    metrics = SegmentationMetrics(num_classes=3)
    metrics.update(prob, np.array([[[0, 1, 1]]]))
    m = metrics.compute()
    assert m["recall"] == 1.0 and m["precision"] == 1.0
    assert m["oa"] == pytest.approx(2 / 3)
    assert m["class_iou/1"] == pytest.approx(1 / 2)
    assert m["class_iou/2"] == 0.0


def test_per_kind_iou_and_false_positives_on_good_images() -> None:
    good = np.zeros((4, 4))
    good[0, 0] = good[3, 3] = 0.95  # two false alarms on a good part
    perfect = TRUTH.astype(np.float64)
    metrics = SegmentationMetrics()
    metrics.update(
        np.stack([PROB, good, perfect]).astype(np.float32),
        np.stack([TRUTH, np.zeros((4, 4), int), TRUTH]),
        ["bent_lead_test_001", "good_train_003", "cut_lead_test_002"],
    )
    metrics.update(_one(np.zeros((4, 4))), np.zeros((1, 4, 4), int), ["good_test_004"])
    m = metrics.compute()
    assert m["iou/bent_lead"] == pytest.approx(3 / 5)
    assert m["iou/cut_lead"] == 1.0
    assert "iou/good" not in m
    assert m["good_fp_pixels"] == 2
    assert m["good_fp_pixels_per_image"] == 1.0
    assert m["good_fp_rate"] == pytest.approx(2 / 32)
    assert m["good_fp_image_rate"] == 0.5
    # Overall: TP 3+4, FP 1+2, FN 1.
    assert m["precision"] == pytest.approx(7 / 10)
    assert m["iou"] == pytest.approx(7 / 11)
    # Images: both defect images detected, one of two good images flagged.
    assert m["image_precision"] == pytest.approx(2 / 3)
    assert m["image_recall"] == 1.0
    assert m["image_f1"] == pytest.approx(0.8)


def test_sample_name_parsing() -> None:
    assert parse_sample_name("bent_lead_test_007") == ("bent_lead", "test", "007")
    assert parse_sample_name("good_train_12.png") == ("good", "train", "12")
    for bad in ("good_val_1", "nounderscores", "good__1"):
        with pytest.raises(ValueError, match="sample name"):
            parse_sample_name(bad)


def test_image_auroc_perfect_and_chance() -> None:
    truth = np.zeros((4, 4, 4), dtype=int)
    truth[:2, 1:3, 1:3] = 1
    separated = np.full((4, 4, 4), 0.1, dtype=np.float32)
    separated[0, 1, 1], separated[1, 2, 2] = 0.9, 0.8  # defect images score highest
    metrics = SegmentationMetrics()
    metrics.update(separated, truth)
    assert metrics.compute()["image_auroc"] == 1.0

    metrics.reset()
    metrics.update(np.full((4, 4, 4), 0.3, dtype=np.float32), truth)
    m = metrics.compute()
    assert m["image_auroc"] == 0.5
    assert m["pixel_auroc"] == 0.5
    assert math.isnan(m["precision"])  # nothing predicted: undefined, not 0


def test_pixel_auroc_perfect() -> None:
    metrics = SegmentationMetrics()
    metrics.update(TRUTH[None].astype(np.float32) * 0.9, TRUTH[None])
    m = metrics.compute()
    assert m["pixel_auroc"] == 1.0
    assert m["pixel_ap"] == pytest.approx(1.0)


def test_rank_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)
    labels = rng.random(200) < 0.3
    assert rank_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_best_f1_threshold() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    labels = np.array([True, False, True, False])
    assert best_f1_threshold(scores, labels) == (pytest.approx(0.8), 0.7)


def _random_batches(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    truth = (rng.random((6, 24, 24)) < 0.2).astype(np.int64)
    truth[4:] = 0
    prob = np.clip(0.35 * truth + 0.65 * rng.random(truth.shape), 0, 1).astype(np.float32)
    names = [
        "bent_lead_test_1",
        "bent_lead_test_2",
        "cut_lead_test_3",
        "cut_lead_train_4",
        "good_test_5",
        "good_train_6",
    ]
    return prob, truth, names


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-12) for k in a
    )


def test_streaming_two_batches_equals_one() -> None:
    prob, truth, names = _random_batches()
    whole = SegmentationMetrics()
    whole.update(prob, truth, names)
    streamed = SegmentationMetrics()
    streamed.update(torch.from_numpy(prob[:2]), torch.from_numpy(truth[:2]), names[:2])
    streamed.update(torch.from_numpy(prob[2:]), torch.from_numpy(truth[2:]), names[2:])
    assert _same(whole.compute(), streamed.compute())
    merged = SegmentationMetrics()
    merged.update(prob[:3], truth[:3], names[:3])
    rest = SegmentationMetrics()
    rest.update(prob[3:], truth[3:], names[3:])
    assert _same(whole.compute(), merged.merge(rest).compute())


def test_histogram_curves_close_to_exact() -> None:
    prob, truth, _ = _random_batches(1)
    metrics = SegmentationMetrics(bins=1000)
    metrics.update(prob, truth)
    m = metrics.compute()
    assert abs(m["pixel_auroc"] - roc_auc_score(truth.ravel(), prob.ravel())) < 1e-3
    assert abs(m["pixel_ap"] - average_precision_score(truth.ravel(), prob.ravel())) < 5e-3
    precision, recall, thresholds = metrics.pr_curve()
    assert precision.shape == recall.shape == thresholds.shape == (1000,)
    assert np.all(np.diff(thresholds) > 0) and np.all(np.diff(recall) <= 0)
    k = 500  # threshold 0.5 reproduces the confusion-matrix precision and recall exactly
    assert thresholds[k] == 0.5
    assert precision[k] == pytest.approx(m["precision"]) and recall[k] == pytest.approx(m["recall"])


def test_bad_inputs_are_named() -> None:
    metrics = SegmentationMetrics()
    with pytest.raises(ValueError, match="probabilities"):
        metrics.update(np.full((1, 2, 2), 3.0), np.zeros((1, 2, 2), int))
    with pytest.raises(ValueError, match="shape"):
        metrics.update(np.zeros((1, 2, 2)), np.zeros((1, 3, 3), int))
    with pytest.raises(ValueError, match="names"):
        metrics.update(np.zeros((2, 2, 2)), np.zeros((2, 2, 2), int), ["good_test_1"])


def test_percent_formatting_keeps_counts() -> None:
    metrics = {"precision": 0.945, "iou/bent_lead": 0.5, "good_fp_pixels": 12.0, "image_best_threshold": 0.4}
    shown = to_percent(metrics)
    assert shown["precision"] == pytest.approx(94.5) and shown["iou/bent_lead"] == 50.0
    assert shown["good_fp_pixels"] == 12.0 and shown["image_best_threshold"] == 0.4
    text = format_metrics({**metrics, "recall": math.nan})
    assert "94.50 %" in text and "n/a" in text


def test_overlay_panels_and_colours() -> None:
    golden = np.zeros((3, 8, 8), dtype=np.float32)  # channels-first float
    test = np.full((8, 8, 3), 100, dtype=np.uint8)
    pred = np.zeros((8, 8), bool)
    pred[2:6, 2:6] = True
    image = overlay(golden, test, pred, TRUTH.repeat(2, 0).repeat(2, 1), gap=2, titles=False)
    assert image.dtype == np.uint8 and image.shape == (8, 4 * 8 + 3 * 2, 3)
    assert (image[:, :8] == 0).all() and (image[:, 10:18] == 100).all()
    prediction, truth = image[:, 20:28], image[:, 30:38]
    assert tuple(prediction[2, 2]) == (255, 0, 0)  # outline in full red
    assert prediction[3, 3, 0] > 100 and prediction[3, 3, 1] < 100  # interior tinted red
    assert tuple(prediction[0, 0]) == (100, 100, 100)
    assert tuple(truth[2, 2]) == (0, 255, 0)
    titled = overlay(golden, test, pred, pred)
    assert titled.shape[0] > 8 and titled.shape[1] == image.shape[1] + 6


def test_mask_outline_is_border_of_square() -> None:
    square = np.zeros((5, 5), bool)
    square[1:4, 1:4] = True
    expected = square.copy()
    expected[2, 2] = False
    assert (mask_outline(square) == expected).all()


def test_pr_curve_plots(tmp_path) -> None:
    prob, truth, _ = _random_batches()
    metrics = SegmentationMetrics()
    metrics.update(prob, truth)
    path = metrics.plot_pr_curve(tmp_path / "plots" / "pr.png")
    assert Image.open(path).size[0] > 100
    precision, recall, _ = metrics.pr_curve()
    _plot_with_pil(tmp_path / "pil.png", precision, recall, "pr", (0.5, 0.5))
    assert Image.open(tmp_path / "pil.png").size == (400, 400)
