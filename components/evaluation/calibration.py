"""The calibration parts: a seeded share of train that no model trains on, for choosing thresholds.

Why: a threshold chosen on the parts a model was fit to is chosen on scores it will never see
again. On real transistor the segmentation verdict ranked every val part correctly, yet at the
threshold it shipped with (chosen on train) it caught 75-83 % of defective parts: the train
scores of defects it had learnt were far above those of new defects. A line runs at the shipped
threshold, so it must be chosen on parts as new to the model as tomorrow's.

``data.calibration_fraction`` of each class of train (good parts and defective parts, each drawn
on its own so both are there) is held out of every family's training; a family whose
``threshold_split`` is ``calibration`` chooses its operating threshold on their scores, with the
same false-alarm budget as before. The draw depends only on the data seed and the item names, so
every stage (train, evaluate, export, quantize, label) sees the same parts, whatever the
training seed.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

__all__ = ["CALIBRATION", "HasParts", "calibration_count", "calibration_names", "split_off", "threshold_provenance"]

CALIBRATION = "calibration"
"""The pseudo-split name: the calibration parts, drawn from train."""
_STREAM = 7  # its own random stream, apart from the split's (components.data.split)


def calibration_count(n: int, fraction: float) -> int:
    """Parts of a class of ``n`` held out: ``fraction * n`` rounded half up, at least one when the class has
    two or more (a class is never held out whole, so training keeps it)."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, math.floor(fraction * n + 0.5)))


def calibration_names(names: Sequence[str], defective: Sequence[bool], fraction: float, seed: int) -> frozenset[str]:
    """The calibration parts among ``names`` (train items, ``defective`` per item).

    Each class is ordered by name and permuted by a generator fixed by ``(seed, class)``, so the draw
    does not depend on the input order or on the other class.
    """
    if len(names) != len(defective):
        raise ValueError(f"{len(names)} names for {len(defective)} labels")
    if len(set(names)) != len(names):
        raise ValueError("calibration parts are drawn by name; the names must be unique")
    held: set[str] = set()
    for flag in (False, True):
        members = sorted(name for name, bad in zip(names, defective, strict=True) if bool(bad) == flag)
        count = calibration_count(len(members), fraction)
        if count:
            rng = np.random.default_rng([seed, _STREAM, zlib.crc32(b"defective" if flag else b"good")])
            held.update(members[i] for i in rng.permutation(len(members))[:count])
    return frozenset(held)


class HasParts(Protocol):
    """A training split that can be cut by part name (each family's dataset class)."""

    def part_names(self) -> list[str]: ...

    def part_defects(self) -> list[bool]: ...

    def restrict(self, keep: frozenset[str]) -> None: ...


D = TypeVar("D", bound=HasParts)


def split_off(dataset: D, fraction: float, seed: int, calibration: bool) -> D:
    """``dataset`` (a train split) cut to its calibration parts (``calibration``) or to the rest (the
    parts training sees). ``fraction`` 0 leaves training everything and calibration nothing to cut."""
    held = calibration_names(dataset.part_names(), dataset.part_defects(), fraction, seed)
    names = set(dataset.part_names())
    dataset.restrict(held if calibration else frozenset(names - held))
    return dataset


def threshold_provenance(chosen_on: str, max_false_alarm_rate: float, calibration_fraction: float) -> dict[str, Any]:
    """How a shipped threshold was chosen, for the sidecar and the registry: the split its scores came
    from, the false-alarm budget, and (for ``calibration``) the share of train held out for it."""
    provenance: dict[str, Any] = {
        "threshold_split": chosen_on,
        "threshold_max_false_alarm_rate": max_false_alarm_rate,
        "threshold_on_unseen_parts": chosen_on != "train",
    }
    if chosen_on == CALIBRATION:
        provenance["calibration_fraction"] = calibration_fraction
    return provenance
