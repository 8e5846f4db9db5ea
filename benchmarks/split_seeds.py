"""Run a benchmark over several seeded splits and report each split, the mean and the worst.

A recipe chosen on one split's val images and reported on the same images says little about
the next line's parts. Every transistor benchmark takes ``--split-seeds 42,1,2,3``: for each
seed the project's own seeded split (``seed`` in params: golden pool, then a per-class 70/30
draw of the other 303 images) is drawn again in its own work folder, the benchmark runs
unchanged on it, and its JSON is kept as ``<name>_split<seed>.json``. Seed 42 is TAO's 212/91
split. The summary (``<name>_splits.json`` and a RESULTS.md section) gives every split's
numbers, their mean, the worst split and the spread, so a README can quote the mean and the
worst, never the best.

``seed`` also seeds training unless ``train_seed`` is set (``--set train_seed=N``), so by
default a split's number includes training noise, as a retrain on new data would.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "TAO_SPLIT_SEED",
    "Column",
    "add_option",
    "command_line",
    "parse_split_seeds",
    "publish",
    "render_section",
    "requested",
    "run_over_splits",
    "split_key",
    "summarize",
]

TAO_SPLIT_SEED = 42
"""``seed: 42`` with ``val_fraction: 0.3`` reproduces TAO's 212/91 transistor split."""

Column = tuple[str, str, bool]
"""``(metric key, column label, higher is better)``."""


def parse_split_seeds(text: str) -> list[int]:
    """``"42,1,2,3"`` -> ``[42, 1, 2, 3]``; distinct non-negative integers, order kept."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split-seeds takes integers separated by commas, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--split-seeds needs distinct non-negative integers, got {text!r}")
    return seeds


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split-seeds",
        type=parse_split_seeds,
        default=None,
        help="seeded splits to run, e.g. 42,1,2,3 (42: TAO's 212/91 split); several give a mean and a worst. "
        "Without it the benchmark runs once on params' own seed and writes its main JSON and section",
    )
    parser.add_argument(
        "--reuse-splits",
        action="store_true",
        help="keep a split whose JSON was written by the same command (same options and --set); run the rest",
    )


def requested(args: argparse.Namespace) -> bool:
    """Whether ``--split-seeds`` was given (even ``--split-seeds 42``: a split row, not the main run)."""
    return bool(getattr(args, "split_seeds", None))


_NOT_OF_THE_RECIPE = frozenset({"workdir", "results_json", "split_seeds", "reuse_splits", "data"})


def split_key(args: argparse.Namespace) -> str:
    """What makes a split's run the same run again: every option but the work folder, paths and seeds."""
    kept = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_OF_THE_RECIPE}
    return json.dumps(kept, sort_keys=True, default=str)


def _reusable(path: Path, key: str) -> dict[str, Any] | None:
    """The split's earlier result when it was written by the same command, else ``None``."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return stored if stored.get("split_key") == key else None


def summarize(values: dict[int, float], higher_is_better: bool = True) -> dict[str, float]:
    """Mean, worst (and its seed), best and population spread over the splits that have a number."""
    kept = {seed: float(v) for seed, v in values.items() if v is not None and not math.isnan(float(v))}
    if not kept:
        return {"mean": math.nan, "worst": math.nan, "worst_seed": math.nan, "best": math.nan, "spread": math.nan}
    pick = min if higher_is_better else max
    worst_seed = pick(kept, key=kept.__getitem__)
    best_seed = (max if higher_is_better else min)(kept, key=kept.__getitem__)
    return {
        "mean": statistics.fmean(kept.values()),
        "worst": kept[worst_seed],
        "worst_seed": float(worst_seed),
        "best": kept[best_seed],
        "spread": statistics.pstdev(kept.values()) if len(kept) > 1 else 0.0,
        "splits": float(len(kept)),
    }


def run_over_splits(
    args: argparse.Namespace,
    run_one: Callable[[argparse.Namespace], dict[str, Any]],
    results_dir: Path,
    name: str,
) -> dict[int, dict[str, Any]]:
    """``run_one`` once per ``args.split_seeds``, each with ``seed=<N>`` added to ``args.set``, its
    own ``args.workdir/split-<N>`` and ``args.results_json`` at ``<results_dir>/<name>_split<N>.json``.

    Each JSON records its :func:`split_key`; with ``args.reuse_splits`` a split whose JSON has the
    same key is read back instead of run again, so four 35-minute splits can be gathered over
    several sittings without mixing recipes.
    """
    runs: dict[int, dict[str, Any]] = {}
    for seed in args.split_seeds:
        one = copy.copy(args)
        one.set = [*args.set, f"seed={seed}"]
        one.workdir = Path(args.workdir) / f"split-{seed}"
        one.results_json = results_dir / f"{name}_split{seed}.json"
        key = split_key(one)
        kind = "TAO split" if seed == TAO_SPLIT_SEED else "seeded split"
        earlier = _reusable(one.results_json, key) if getattr(args, "reuse_splits", False) else None
        if earlier is not None:
            print(f"[split seed {seed}] {kind}: reusing {one.results_json.name} (same command)", flush=True)
            runs[seed] = earlier
            continue
        print(f"[split seed {seed}] {kind}", flush=True)
        result = run_one(one)
        result["split_key"] = key
        one.results_json.parent.mkdir(parents=True, exist_ok=True)
        one.results_json.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
        runs[seed] = result
    return runs


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def render_section(
    title: str,
    command: str,
    per_split: dict[str, dict[int, dict[str, float]]],
    columns: Sequence[Column],
    begin: str,
    end: str,
) -> tuple[str, dict[str, Any]]:
    """A RESULTS.md section and its JSON: per model, a row per split, then the mean and the worst.

    ``per_split``: ``{model: {seed: {metric: value}}}`` with values as fractions (shown in %).
    """
    lines = [begin, f"### {title}", "", f"`{command}`. Seed {TAO_SPLIT_SEED} is TAO's 212/91 split.", ""]
    header = "| model | split seed | " + " | ".join(label for _, label, _ in columns) + " |"
    lines += [header, "|---" * (len(columns) + 2) + "|"]
    summary: dict[str, Any] = {}
    for model, splits in per_split.items():
        for seed, metrics in splits.items():
            cells = " | ".join(_pct(metrics.get(key)) for key, _, _ in columns)
            lines.append(f"| {model} | {seed}{' (TAO)' if seed == TAO_SPLIT_SEED else ''} | {cells} |")
        stats = {key: summarize({s: m.get(key) for s, m in splits.items()}, better) for key, _, better in columns}
        summary[model] = stats
        lines.append(
            f"| **{model}** | **mean** | " + " | ".join(f"**{_pct(stats[k]['mean'])}**" for k, _, _ in columns) + " |"
        )
        lines.append(
            f"| **{model}** | **worst** | "
            + " | ".join(
                f"**{_pct(stats[k]['worst'])}** ({'n/a' if math.isnan(stats[k]['worst_seed']) else int(stats[k]['worst_seed'])})"
                for k, _, _ in columns
            )
            + " |"
        )
    lines += ["", "Worst: the lowest split (highest for a false-alarm rate), its seed in brackets.", end]
    return "\n".join(lines), summary


def command_line(script: str, options: Sequence[str], args: argparse.Namespace) -> str:
    """The command that reproduces the run: ``script``, its ``options``, every ``--set`` and the seeds."""
    parts = [f"python benchmarks/{script}", *options, *(f"--set {shlex.quote(item)}" for item in args.set)]
    return " ".join([*parts, "--split-seeds " + ",".join(map(str, args.split_seeds))])


def publish(
    results_dir: Path,
    name: str,
    title: str,
    command: str,
    per_split: dict[str, dict[int, dict[str, float]]],
    columns: Sequence[Column],
    markers: tuple[str, str],
    update_md: Callable[[str, str, str], None] | None,
) -> str:
    """Write ``<results_dir>/<name>_splits.json`` and (with ``update_md``) the RESULTS.md section; return it."""
    section, summary = render_section(title, command, per_split, columns, *markers)
    path = results_dir / f"{name}_splits.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "per_split": per_split, "summary": summary}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    if update_md is not None:
        update_md(section, *markers)
    print(section)
    return section
