import math

from components.registry import Candidate, decide_promotion, worst_quant_drop


def test_first_model_becomes_champion() -> None:
    decision = decide_promotion(Candidate("1", 0.71, 0.001), None, tolerance=0.005)
    assert decision.promote
    assert "no champion" in decision.reason


def test_better_or_equal_challenger_is_promoted() -> None:
    champion = Candidate("3", 0.70, None)
    assert decide_promotion(Candidate("4", 0.72, 0.0), champion, 0.005).promote
    assert decide_promotion(Candidate("4", 0.70, 0.0), champion, 0.005).promote


def test_worse_challenger_is_rejected_with_both_numbers() -> None:
    decision = decide_promotion(Candidate("4", 0.69, 0.0), Candidate("3", 0.70, None), 0.005)
    assert not decision.promote
    assert "69.00" in decision.reason and "70.00" in decision.reason


def test_quantization_drop_beyond_tolerance_blocks_promotion_even_if_better() -> None:
    decision = decide_promotion(Candidate("4", 0.90, 0.011), Candidate("3", 0.70, None), 0.005)
    assert not decision.promote
    assert "1.10 points" in decision.reason


def test_unquantized_model_is_judged_on_iou_alone() -> None:
    assert decide_promotion(Candidate("2", 0.5, None), Candidate("1", 0.4, None), 0.0).promote


def test_missing_val_iou_is_never_promoted() -> None:
    assert not decide_promotion(Candidate("2", math.nan, None), None, 0.005).promote


def test_worst_quant_drop_takes_the_largest_drop() -> None:
    metrics = {"quantize/onnxruntime/iou_drop": 0.002, "quantize/modelopt/iou_drop": 0.004, "quantize/x/val_iou": 0.7}
    assert worst_quant_drop(metrics) == 0.004
    assert worst_quant_drop({}) is None


def test_a_variant_outside_tolerance_or_unjudged_blocks_promotion() -> None:
    metrics = {"quantize/onnxruntime/iou_drop": 0.001, "quantize/modelopt/within_tolerance": 0.0}
    assert worst_quant_drop(metrics) == float("inf")
    assert not decide_promotion(Candidate("2", 0.9, worst_quant_drop(metrics)), None, 0.005).promote
