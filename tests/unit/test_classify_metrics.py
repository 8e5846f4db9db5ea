"""Image-level metrics and the operating threshold, against hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.models.changenet_classify.metrics import (
    average_precision,
    choose_threshold,
    classification_metrics,
    roc_curve,
)


def test_tao_metrics_at_a_threshold() -> None:
    scores = np.array([0.1, 0.2, 0.7, 0.3, 0.9, 0.6, 0.2, 0.8])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # one false alarm (0.7), one missed defect (0.2)
    m = classification_metrics(scores, labels, threshold=0.5)
    assert m["total_accuracy"] == pytest.approx(6 / 8)
    assert m["defect_accuracy"] == pytest.approx(3 / 4)
    assert m["false_alarm"] == pytest.approx(1 / 8)  # TAO: over all parts
    assert m["false_negative"] == pytest.approx(1 / 8)
    assert m["false_alarm_rate"] == pytest.approx(1 / 4)  # over good parts
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["misclassified"] == 2 and m["defects"] == 4 and m["parts"] == 8
    # AUROC: 16 good/defect pairs; defect wins 12, tie (0.2 vs 0.2) counts half, loses 3.5
    assert m["auroc"] == pytest.approx(12.5 / 16)


def test_perfect_separation_gives_auroc_and_ap_of_one() -> None:
    scores, labels = np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])
    m = classification_metrics(scores, labels, 0.5)
    assert m["auroc"] == 1.0 and m["ap"] == 1.0 and m["total_accuracy"] == 1.0


def test_average_precision_by_hand() -> None:
    # ranked: D(0.9) G(0.8) D(0.7) G(0.1): precision at the defects 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert math.isnan(average_precision(np.array([0.3]), np.array([0])))


def test_roc_curve_runs_from_origin_to_one_one() -> None:
    fpr, tpr, thresholds = roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert thresholds[0] == np.inf


def test_threshold_sits_in_the_middle_of_a_clean_gap() -> None:
    scores, labels = np.array([0.1, 0.2, 0.3, 0.8, 0.9]), np.array([0, 0, 0, 1, 1])
    assert choose_threshold(scores, labels, 0.0) == pytest.approx(0.55)


def test_threshold_respects_the_false_alarm_budget() -> None:
    good = np.linspace(0.0, 0.5, 50)  # 50 good parts, the best at 0.5
    bad = np.array([0.45, 0.6, 0.7])
    scores, labels = np.r_[good, bad], np.r_[np.zeros(50), np.ones(3)]
    strict = choose_threshold(scores, labels, 0.0)  # no false alarm: the 0.45 defect is given up
    assert 0.5 <= strict < 0.6
    m = classification_metrics(scores, labels, strict)
    assert m["false_alarm_rate"] == 0.0 and m["defect_accuracy"] == pytest.approx(2 / 3)
    loose = choose_threshold(scores, labels, 0.1)  # 5 good parts may be flagged: all defects caught
    m = classification_metrics(scores, labels, loose)
    assert m["defect_accuracy"] == 1.0 and m["false_alarm_rate"] <= 0.1


def test_threshold_with_one_class_only() -> None:
    assert choose_threshold(np.array([0.2, 0.4]), np.array([0, 0]), 0.02) > 0.4
    assert choose_threshold(np.array([0.6, 0.7]), np.array([1, 1]), 0.02) < 0.6


def test_reported_threshold_is_nan_where_chosen_the_given_one_else_chosen_only_then() -> None:
    from components.evaluation.verdict import reported_threshold

    calls: list[int] = []

    def choose() -> float:
        calls.append(1)
        return 0.7

    assert math.isnan(reported_threshold(True, 0.3, choose)) and not calls  # the threshold split: no verdict
    assert reported_threshold(False, 0.3, choose) == 0.3 and not calls  # given (the FP32 model's): no pass
    assert reported_threshold(False, None, choose) == 0.7 and calls == [1]
