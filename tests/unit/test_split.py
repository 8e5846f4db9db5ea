"""The seeded split: exact TAO/MVTec transistor sizes, determinism and golden isolation.

Uses fake sample lists (no files): the split is pure, and the tests must not need MVTec.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from components.data.layout import Sample
from components.data.split import (
    SplitError,
    class_split_sizes,
    golden_pool_size,
    split_samples,
)

TRANSISTOR_DEFECTS = ("bent_lead", "cut_lead", "damaged_case", "misplaced")


def fake_samples(n_train_good: int, n_test_good: int, defects: dict[str, int]) -> list[Sample]:
    """Samples shaped like a scanned MVTec category; paths are never opened."""
    root = Path("/nonexistent")
    samples = [Sample("train", "good", f"{i:03d}", root / f"train/good/{i:03d}.png", None) for i in range(n_train_good)]
    samples += [Sample("test", "good", f"{i:03d}", root / f"test/good/{i:03d}.png", None) for i in range(n_test_good)]
    for kind, count in defects.items():
        samples += [
            Sample("test", kind, f"{i:03d}", root / f"test/{kind}/{i:03d}.png", root / f"gt/{kind}/{i:03d}_mask.png")
            for i in range(count)
        ]
    return samples


@pytest.fixture(scope="module")
def transistor() -> list[Sample]:
    return fake_samples(213, 60, dict.fromkeys(TRANSISTOR_DEFECTS, 10))


def split_transistor(samples: list[Sample], seed: int = 42, **kwargs: float | int):
    return split_samples(samples, seed=seed, golden_fraction=0.05, val_fraction=0.3, **kwargs)


def test_transistor_sizes_match_the_tao_recipe(transistor: list[Sample]) -> None:
    plan = split_transistor(transistor)
    assert len(plan.golden_pool) == 10
    assert len(plan.in_split("train")) == 212
    assert len(plan.in_split("val")) == 91
    assert plan.in_split("test") == []
    assert plan.class_counts("train") == {"good": 184, **dict.fromkeys(TRANSISTOR_DEFECTS, 7)}
    assert plan.class_counts("val") == {"good": 79, **dict.fromkeys(TRANSISTOR_DEFECTS, 3)}


def test_goldens_come_from_train_good_and_never_appear_in_a_split(transistor: list[Sample]) -> None:
    plan = split_transistor(transistor, num_golden=3)
    pool = {s.name for s in plan.golden_pool}
    assert all(s.split == "train" and s.is_good for s in plan.golden_pool)
    assert pool.isdisjoint(a.name for a in plan.assignments)
    assert len(plan.assignments) + len(pool) == len(transistor)
    for assignment in plan.assignments:
        names = [g.name for g in assignment.goldens]
        assert len(names) == 3 == len(set(names))
        assert set(names) <= pool
        assert assignment.golden == assignment.goldens[0]


def test_same_seed_same_split_and_input_order_does_not_matter(transistor: list[Sample]) -> None:
    shuffled = list(transistor)
    random.Random(7).shuffle(shuffled)
    assert split_transistor(transistor) == split_transistor(shuffled)


def test_different_seed_different_split(transistor: list[Sample]) -> None:
    first, second = split_transistor(transistor, seed=1), split_transistor(transistor, seed=2)
    assert first.golden_pool != second.golden_pool
    assert [a.split for a in first.assignments] != [a.split for a in second.assignments]
    assert len(second.in_split("val")) == 91  # sizes do not depend on the seed


def test_pairing_uses_several_goldens(transistor: list[Sample]) -> None:
    plan = split_transistor(transistor)
    assert len({a.golden.name for a in plan.assignments}) > 5


def test_each_class_is_split_about_70_30() -> None:
    plan = split_samples(
        fake_samples(40, 30, {"a": 20, "b": 7}), seed=0, golden_fraction=0.1, val_fraction=0.3, test_fraction=0.0
    )
    train, val = plan.class_counts("train"), plan.class_counts("val")
    for label in ("good", "a", "b"):
        share = val[label] / (val[label] + train[label])
        assert abs(share - 0.3) < 0.1, (label, share)


def test_test_fraction_makes_a_third_split(transistor: list[Sample]) -> None:
    plan = split_transistor(transistor, test_fraction=0.2)
    assert plan.class_counts("test")["bent_lead"] == 2
    assert plan.class_counts("train")["bent_lead"] == 5


@pytest.mark.parametrize(
    ("n", "val", "test", "expected"),
    [
        (0, 0.3, 0.0, (0, 0, 0)),
        (1, 0.3, 0.0, (1, 0, 0)),
        (1, 0.5, 0.4, (1, 0, 0)),
        (2, 0.3, 0.0, (1, 1, 0)),
        (2, 0.5, 0.4, (1, 1, 0)),  # test gives way first
        (3, 0.45, 0.45, (1, 1, 1)),
        (10, 0.3, 0.0, (7, 3, 0)),
        (10, 0.25, 0.0, (7, 3, 0)),  # halves round up, not to even
        (263, 0.3, 0.0, (184, 79, 0)),
    ],
)
def test_class_split_sizes_keep_a_train_item(n: int, val: float, test: float, expected: tuple[int, int, int]) -> None:
    assert class_split_sizes(n, val, test) == expected


@pytest.mark.parametrize(("n", "fraction", "expected"), [(213, 0.05, 10), (20, 0.05, 1), (1, 0.5, 1), (10, 0.99, 9)])
def test_golden_pool_size(n: int, fraction: float, expected: int) -> None:
    assert golden_pool_size(n, fraction) == expected


def test_too_many_goldens_requested_is_a_clear_error() -> None:
    with pytest.raises(SplitError, match=r"num_golden=2.*golden pool holds only 1"):
        split_samples(fake_samples(20, 2, {"a": 2}), seed=0, golden_fraction=0.05, val_fraction=0.3, num_golden=2)


def test_duplicate_names_and_missing_train_good_are_errors() -> None:
    samples = fake_samples(3, 2, {})
    with pytest.raises(SplitError, match="unique"):
        split_samples([*samples, samples[0]], seed=0, golden_fraction=0.3, val_fraction=0.3)
    with pytest.raises(SplitError, match="train/good"):
        split_samples(fake_samples(0, 2, {"a": 2}), seed=0, golden_fraction=0.3, val_fraction=0.3)
