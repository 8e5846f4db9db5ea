"""``--split-seeds`` in the transistor benchmarks (``benchmarks/split_seeds.py``): each split runs in its
own folder with its own seed, and the report gives every split, the mean and the worst."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import split_seeds  # a script folder, not a package


def test_seeds_parse_in_order_and_bad_lists_are_refused() -> None:
    assert split_seeds.parse_split_seeds("42,1,2,3") == [42, 1, 2, 3]
    for bad in ("", "42,42", "a,1", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            split_seeds.parse_split_seeds(bad)


def test_each_split_runs_in_its_own_folder_with_its_seed(tmp_path: Path) -> None:
    seen: list[tuple[list[str], Path, Path]] = []

    def run_one(args: argparse.Namespace) -> dict[str, Any]:
        seen.append((args.set, args.workdir, args.results_json))
        return {"seed": args.set[-1]}

    args = argparse.Namespace(split_seeds=[42, 1], set=["segment.train.epochs=2"], workdir=tmp_path / "w")
    runs = split_seeds.run_over_splits(args, run_one, tmp_path / "results", "bench")
    assert {seed: run["seed"] for seed, run in runs.items()} == {42: "seed=42", 1: "seed=1"}
    assert seen[1] == (
        ["segment.train.epochs=2", "seed=1"],
        tmp_path / "w" / "split-1",
        tmp_path / "results" / "bench_split1.json",
    )
    assert args.set == ["segment.train.epochs=2"]  # the caller's arguments are left alone


def test_reuse_keeps_only_splits_run_by_the_same_command(tmp_path: Path) -> None:
    """Four 35-minute splits can be gathered over several sittings, never mixing two recipes."""
    ran: list[int] = []

    def run_one(args: argparse.Namespace) -> dict[str, Any]:
        ran.append(int(args.set[-1].split("=")[1]))
        return {"iou": 0.5}

    def sitting(seeds: list[int], sets: list[str], reuse: bool = True) -> dict[int, dict[str, Any]]:
        args = argparse.Namespace(split_seeds=seeds, set=sets, workdir=tmp_path / "w", minutes=35.0, reuse_splits=reuse)
        return split_seeds.run_over_splits(args, run_one, tmp_path / "results", "bench")

    sitting([42], ["epochs=28"])
    runs = sitting([42, 1], ["epochs=28"])
    assert ran == [42, 1] and set(runs) == {42, 1}  # 42 read back, 1 run
    sitting([42, 1], ["epochs=9"])  # another recipe: nothing reused
    assert ran == [42, 1, 42, 1]
    sitting([42], ["epochs=9"], reuse=False)  # without the option every split runs
    assert ran == [42, 1, 42, 1, 42]
    assert not split_seeds.requested(argparse.Namespace(split_seeds=None))
    assert split_seeds.requested(argparse.Namespace(split_seeds=[42]))  # a split row, not the main run


def test_summary_reports_the_mean_and_the_worst_not_the_best() -> None:
    stats = split_seeds.summarize({42: 0.88, 1: 0.84, 2: float("nan"), 3: 0.86})
    assert stats["mean"] == pytest.approx(0.86) and stats["worst"] == 0.84 and stats["worst_seed"] == 1
    assert stats["splits"] == 3  # a split without the number does not count
    alarms = split_seeds.summarize({42: 0.0, 1: 0.05}, higher_is_better=False)
    assert alarms["worst"] == 0.05 and alarms["worst_seed"] == 1
    assert math.isnan(split_seeds.summarize({42: None})["mean"])


def test_section_has_a_row_per_split_then_mean_and_worst() -> None:
    per_split = {"model": {42: {"iou": 0.88, "far": 0.0}, 1: {"iou": 0.84, "far": 0.02}}}
    columns = (("iou", "IoU", True), ("far", "false alarm", False))
    section, summary = split_seeds.render_section("T", "cmd", per_split, columns, "<!-- b -->", "<!-- e -->")
    lines = section.splitlines()
    assert lines[0] == "<!-- b -->" and lines[-1] == "<!-- e -->"
    assert "| model | 42 (TAO) | 88.0 | 0.0 |" in lines and "| model | 1 | 84.0 | 2.0 |" in lines
    assert "| **model** | **mean** | **86.0** | **1.0** |" in lines
    assert "| **model** | **worst** | **84.0** (1) | **2.0** (1) |" in lines
    assert summary["model"]["iou"]["worst_seed"] == 1
