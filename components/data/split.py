"""Seeded train/val/test split of one category, following TAO Visual ChangeNet's MVTec recipe.

The recipe: a small *golden pool* of defect-free ``train/good`` images is set aside as
references; every other image (the rest of ``train/good`` plus all of ``test``) is split
per class into train/val(/test), and each is paired with golden image(s) from the pool.

This module is pure (no I/O, no globals) so the split can be unit-tested on fake sample
lists and reproduced exactly from ``(samples, seed, fractions)``. Each random decision
draws from its own stream, derived from the seed and a stable name (the class or the
sample), so adding a defect class or one more image does not reshuffle everything else.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from components.data.layout import Sample

TRAIN, VAL, TEST = "train", "val", "test"
SPLIT_NAMES = (TRAIN, VAL, TEST)

# Stream tags keep the three kinds of random decisions independent of one another.
_POOL_STREAM, _CLASS_STREAM, _PAIR_STREAM = 0, 1, 2


class SplitError(ValueError):
    """The samples cannot be split as configured; the message says which knob to change."""


@dataclass(frozen=True)
class Assignment:
    """One non-golden sample, the split it lands in and its reference golden(s)."""

    sample: Sample
    split: str
    goldens: tuple[Sample, ...]

    @property
    def golden(self) -> Sample:
        """The golden used as segmentation's B image (the first one drawn)."""
        return self.goldens[0]

    @property
    def name(self) -> str:
        return self.sample.name


@dataclass(frozen=True)
class SplitPlan:
    """The whole split: golden pool plus assignments, both sorted by sample name."""

    golden_pool: tuple[Sample, ...]
    assignments: tuple[Assignment, ...]

    def in_split(self, split: str) -> list[Assignment]:
        """Assignments of one split, in name order (the order every output is written in)."""
        return [a for a in self.assignments if a.split == split]

    def class_counts(self, split: str) -> dict[str, int]:
        """``{class: count}`` of one split, classes sorted."""
        counts: dict[str, int] = {}
        for assignment in self.in_split(split):
            counts[assignment.sample.label] = counts.get(assignment.sample.label, 0) + 1
        return dict(sorted(counts.items()))


def _stream(seed: int, kind: int, key: str = "") -> np.random.Generator:
    """A generator fixed by ``(seed, kind, key)``; crc32 because ``hash()`` is salted per process."""
    return np.random.default_rng([seed, kind, zlib.crc32(key.encode("utf-8"))])


def _round_half_up(value: float) -> int:
    """Conventional rounding: Python's ``round`` rounds halves to even (``round(2.5) == 2``)."""
    return math.floor(value + 0.5)


def golden_pool_size(n_train_good: int, golden_fraction: float) -> int:
    """``floor(fraction * n)``, at least one so that every sample can have a reference."""
    return min(n_train_good, max(1, math.floor(golden_fraction * n_train_good)))


def class_split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """``(train, val, test)`` sizes of one class of ``n`` items.

    Rounded per class, then clipped so a class with any items keeps at least one in
    train (a class the model never trains on is useless); test gives way before val.
    """
    n_val, n_test = _round_half_up(n * val_fraction), _round_half_up(n * test_fraction)
    excess = n_val + n_test - max(n - 1, 0)
    if excess > 0:
        cut = min(excess, n_test)
        n_test -= cut
        n_val -= excess - cut
    return n - n_val - n_test, n_val, n_test


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)
"""Anything with a ``name``: the pool and pairing draws key their streams on it."""


def _by_name(samples: Iterable[N]) -> list[N]:
    return sorted(samples, key=lambda s: s.name)


def _check_unique(samples: Sequence[Sample]) -> None:
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise SplitError(f"sample names must be unique; repeated: {dupes[:5]}")


def draw_golden_pool(train_good: Sequence[N], seed: int, golden_fraction: float, num_golden: int = 1) -> list[N]:
    """The seeded golden pool drawn from ``train_good`` (given in name order: the draw picks positions).

    Works on anything with a ``name`` (MVTec samples, class-folder records); raises
    :class:`SplitError` when there is no good image or the pool is smaller than ``num_golden``.
    """
    if not train_good:
        raise SplitError("no train/good images: the golden pool needs at least one")
    size = golden_pool_size(len(train_good), golden_fraction)
    picked = _stream(seed, _POOL_STREAM).choice(len(train_good), size=size, replace=False)
    pool = _by_name(train_good[i] for i in picked)
    if num_golden > len(pool):
        raise SplitError(
            f"num_golden={num_golden} but the golden pool holds only {len(pool)} image(s) "
            f"(golden_fraction={golden_fraction} of {len(train_good)} train/good); "
            "raise data.golden_fraction or lower data.num_golden"
        )
    return pool


def split_class(
    label: str, names: Sequence[str], seed: int, val_fraction: float, test_fraction: float
) -> dict[str, str]:
    """``{name: split}`` for the members of one class, ``names`` in name order.

    The permutation is drawn from the class's own stream, so the split of one class never
    depends on the others; every source format with no split of its own uses this.
    """
    n_train, n_val, _ = class_split_sizes(len(names), val_fraction, test_fraction)
    order = _stream(seed, _CLASS_STREAM, label).permutation(len(names))
    splits: dict[str, str] = {}
    for rank, index in enumerate(order):
        splits[names[index]] = TRAIN if rank < n_train else VAL if rank < n_train + n_val else TEST
    return splits


def _split_class(items: list[Sample], seed: int, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """``{sample name: split}`` for the items of one class (all share a label)."""
    return split_class(items[0].label, [s.name for s in items], seed, val_fraction, test_fraction)


def draw_goldens(item: _Named, pool: Sequence[N], seed: int, num_golden: int) -> tuple[N, ...]:
    """The ``num_golden`` pool members paired with ``item``, from its own stream (its name)."""
    picked = _stream(seed, _PAIR_STREAM, item.name).choice(len(pool), size=num_golden, replace=False)
    return tuple(pool[i] for i in picked)


def split_samples(
    samples: Sequence[Sample],
    seed: int,
    golden_fraction: float,
    val_fraction: float,
    test_fraction: float = 0.0,
    num_golden: int = 1,
) -> SplitPlan:
    """Split a category's samples (``CategoryIndex.samples``) into a :class:`SplitPlan`.

    Deterministic given the arguments; the input order does not matter (sorted by name first).
    """
    _check_unique(samples)
    ordered = _by_name(samples)
    train_good = [s for s in ordered if s.split == TRAIN and s.is_good]
    pool = draw_golden_pool(train_good, seed, golden_fraction, num_golden)
    pool_names = {s.name for s in pool}
    rest = [s for s in ordered if s.name not in pool_names]
    by_class: dict[str, list[Sample]] = {}
    for sample in rest:
        by_class.setdefault(sample.label, []).append(sample)
    split_of: dict[str, str] = {}
    for label in sorted(by_class):
        split_of.update(_split_class(by_class[label], seed, val_fraction, test_fraction))
    assignments = tuple(Assignment(s, split_of[s.name], draw_goldens(s, pool, seed, num_golden)) for s in rest)
    return SplitPlan(golden_pool=tuple(pool), assignments=assignments)


__all__ = [
    "SPLIT_NAMES",
    "Assignment",
    "SplitError",
    "SplitPlan",
    "class_split_sizes",
    "draw_golden_pool",
    "draw_goldens",
    "golden_pool_size",
    "split_class",
    "split_samples",
]
