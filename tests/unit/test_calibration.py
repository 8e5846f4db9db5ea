"""Calibration parts (``data.calibration_fraction``): held out of every family's training, and the
scores a ``threshold_split: calibration`` chooses the shipped threshold on."""

from __future__ import annotations

import pytest

from components.config import ParamsError, parse_params
from components.evaluation.calibration import (
    CALIBRATION,
    calibration_count,
    calibration_names,
    split_off,
    threshold_provenance,
)

NAMES = [f"good_{i:03d}" for i in range(40)] + [f"bent_{i:03d}" for i in range(12)]
DEFECTIVE = [False] * 40 + [True] * 12


def test_each_class_gives_its_share_and_never_all_of_itself() -> None:
    held = calibration_names(NAMES, DEFECTIVE, 0.15, seed=42)
    assert sum(name.startswith("good") for name in held) == 6  # 0.15 * 40
    assert sum(name.startswith("bent") for name in held) == 2  # 0.15 * 12 = 1.8, rounded half up
    assert calibration_count(2, 0.1) == 1 and calibration_count(1, 0.4) == 0 and calibration_count(3, 0.49) == 1
    assert calibration_count(10, 0.0) == 0


def test_the_draw_depends_on_the_seed_and_the_names_only() -> None:
    held = calibration_names(NAMES, DEFECTIVE, 0.15, seed=42)
    assert calibration_names(NAMES[::-1], DEFECTIVE[::-1], 0.15, seed=42) == held
    assert calibration_names(NAMES, DEFECTIVE, 0.15, seed=1) != held
    # One more good part leaves the defective draw alone (each class has its own stream).
    more = calibration_names([*NAMES, "good_999"], [*DEFECTIVE, False], 0.15, seed=42)
    assert {n for n in more if n.startswith("bent")} == {n for n in held if n.startswith("bent")}
    with pytest.raises(ValueError, match="unique"):
        calibration_names(["a", "a"], [False, False], 0.5, seed=0)


class _Parts:
    def __init__(self) -> None:
        self.names, self.defects = list(NAMES), list(DEFECTIVE)

    def part_names(self) -> list[str]:
        return self.names

    def part_defects(self) -> list[bool]:
        return self.defects

    def restrict(self, keep: frozenset[str]) -> None:
        pairs = [(n, d) for n, d in zip(self.names, self.defects, strict=True) if n in keep]
        self.names, self.defects = [n for n, _ in pairs], [d for _, d in pairs]


def test_training_and_calibration_split_train_between_them() -> None:
    training, calibration = (
        split_off(_Parts(), 0.2, 7, calibration=False),
        split_off(_Parts(), 0.2, 7, calibration=True),
    )
    assert not set(training.names) & set(calibration.names)
    assert set(training.names) | set(calibration.names) == set(NAMES)
    assert any(calibration.defects) and not all(calibration.defects)
    assert split_off(_Parts(), 0.0, 7, calibration=False).names == NAMES  # nothing held out


@pytest.mark.parametrize(
    "section",
    [
        {"segment": {"eval": {"image_threshold_split": CALIBRATION}}},
        {"classify": {"eval": {"threshold_split": CALIBRATION}}},
        {"cam": {"eval": {"threshold_split": CALIBRATION}}},
    ],
)
def test_a_calibration_threshold_needs_parts_held_out(section: dict) -> None:
    with pytest.raises(ParamsError, match=r"calibration needs data\.calibration_fraction > 0"):
        parse_params(section)
    assert parse_params({**section, "data": {"calibration_fraction": 0.15}}).data.calibration_fraction == 0.15


def test_the_sidecar_says_how_the_threshold_was_chosen() -> None:
    assert threshold_provenance(CALIBRATION, 0.02, 0.15) == {
        "threshold_split": "calibration",
        "threshold_max_false_alarm_rate": 0.02,
        "threshold_on_unseen_parts": True,
        "calibration_fraction": 0.15,
    }
    assert threshold_provenance("train", 0.02, 0.0)["threshold_on_unseen_parts"] is False
