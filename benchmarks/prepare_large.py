"""How fast large golden/test-pair datasets import and prepare on this machine.

Generates ``--pairs`` aligned 640x640 pairs in the ``pairs`` format (a textured board with
a part, camera noise, a shifted golden; a third are defects with a mask and a box file),
then times, each on its own:

1. ``inspectops data import --format pairs`` (read, Great Expectations checks with a full
   decode of every file, byte copy into ``data/pairs/<name>``);
2. ``prepare`` to 256x256 with ``data.workers`` 1 and 2 (segmentation, classification and
   COCO datasets), checking that both write the same bytes.

Generated data lives in ``--workdir`` and is reused by later runs (``--regenerate`` to redo).
Results: ``benchmarks/results/prepare_large.json`` and a table in ``benchmarks/RESULTS.md``.

    python benchmarks/prepare_large.py --pairs 10000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from segment_transistor import update_results_md  # noqa: E402

from components.config import load_params  # noqa: E402
from components.data.importer import import_source  # noqa: E402
from components.data.prepare import prepare_datasets  # noqa: E402
from components.data.sources.options import SourceOptions  # noqa: E402

RESULTS_JSON = REPO / "benchmarks" / "results" / "prepare_large.json"
MARK_BEGIN = "<!-- prepare_large:begin -->"
MARK_END = "<!-- prepare_large:end -->"
SIZE = 640
DEFECT_EVERY = 3


def _pair(index: int, root: str) -> None:
    """Write pair ``index``: deterministic per index, so any worker count writes the same files."""
    rng = np.random.default_rng([7, index])
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    board = 90 + 30 * np.sin(xx / (17 + index % 5)) * np.cos(yy / 23.0)
    golden = np.repeat(board[..., None], 3, axis=2)
    x0, y0 = 200 + rng.integers(-20, 20), 220 + rng.integers(-20, 20)
    golden[y0 : y0 + 200, x0 : x0 + 240] = (60, 60, 70)  # the part's case
    test = golden.copy()
    stem = f"{index:05d}"
    out = Path(root)
    if index % DEFECT_EVERY == 0:
        w, h = int(rng.integers(12, 60)), int(rng.integers(12, 60))
        x, y = int(x0 + rng.integers(0, 240 - w)), int(y0 + rng.integers(0, 200 - h))
        test[y : y + h, x : x + w] = (200, 190, 170)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[y : y + h, x : x + w] = 255
        Image.fromarray(mask).save(out / f"{stem}_mask.png", compress_level=1)
        (out / f"{stem}.txt").write_text(f"{x},{y},{x + w},{y + h},scratch\n")
    for name, image in (("test", test), ("golden", golden)):
        noisy = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(out / f"{stem}_{name}.png", compress_level=1)


def generate(root: Path, pairs: int, workers: int) -> float:
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_pair, range(pairs), [str(root)] * pairs, chunksize=64))
    (root / ".complete").write_text(str(pairs))
    return time.perf_counter() - started


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir)
    source = work / f"source_{args.pairs}"
    if args.regenerate or not (source / ".complete").is_file():
        shutil.rmtree(source, ignore_errors=True)
        print(f"generating {args.pairs} pairs at {SIZE}x{SIZE} in {source} ...", flush=True)
        generated = generate(source, args.pairs, os.cpu_count() or 1)
        print(f"  {generated:.0f} s", flush=True)
    size_mb = sum(p.stat().st_size for p in source.iterdir()) / 2**20
    data_dir = work / "data"
    shutil.rmtree(data_dir / "pairs", ignore_errors=True)
    started = time.perf_counter()
    found = import_source("pairs", source, "large", data_dir / "pairs", SourceOptions(), progress=True)
    import_s = time.perf_counter() - started
    timings: dict[str, float] = {}
    digests: dict[int, str] = {}
    for workers in args.workers:
        params = load_params(
            REPO / "params.yaml",
            {
                "paths.data_dir": str(data_dir),
                "paths.artifacts_dir": str(work / f"artifacts_{workers}"),
                "data.source": "pairs",
                "data.category": "large",
                "data.image_size": args.image_size,
                "data.lighting_conditions": ["UniformLight"],
                "data.workers": workers,
            },
        )
        started = time.perf_counter()
        summary = prepare_datasets(params, progress=True)
        timings[workers] = time.perf_counter() - started
        digests[workers] = tree_digest(params.datasets_dir)
        print(f"prepare, {workers} worker(s): {timings[workers]:.0f} s", flush=True)
    return {
        "pairs": args.pairs,
        "source_size": SIZE,
        "source_mb": round(size_mb),
        "image_size": args.image_size,
        "records": found["records"],
        "boxes": found["boxes"],
        "import_seconds": round(import_s, 1),
        "prepare_seconds": {str(k): round(v, 1) for k, v in timings.items()},
        "identical_outputs": len(set(digests.values())) == 1,
        "segment_train": summary["segment/train"],
        "segment_val": summary["segment/val"],
        "coco_annotations": summary["coco/train_annotations"] + summary["coco/val_annotations"],
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def render_markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| prepare to {r['image_size']}², `data.workers: {w}` | {s:.0f} s | {r['pairs'] / s:.0f} pairs/s |"
        for w, s in r["prepare_seconds"].items()
    )
    return f"""{MARK_BEGIN}
## Large data: import and prepare of {r["pairs"]:,} golden/test pairs ({r["source_size"]}×{r["source_size"]}, issue #12)

`python benchmarks/prepare_large.py --pairs {r["pairs"]}` on {r["cores"]} cores: generated pairs in the `pairs`
format ({r["source_mb"]:,} MB of PNG; a third are defects with a mask and a box file, {r["boxes"]:,} boxes).
Import reads, checks (Great Expectations, a full decode of every file) and copies; prepare writes the
segmentation, classification and COCO datasets ({r["segment_train"]:,} train / {r["segment_val"]:,} val pairs,
{r["coco_annotations"]:,} COCO instances). Same bytes with 1 and 2 workers: {r["identical_outputs"]}.

| step | time | rate |
|---|---|---|
| import (read, check, copy) | {r["import_seconds"]:.0f} s | {r["pairs"] / r["import_seconds"]:.0f} pairs/s |
{rows}
{MARK_END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", default="/tmp/inspectops-prepare-large")
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()
    results = run(args)
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    update_results_md(render_markdown(results), MARK_BEGIN, MARK_END)
    print(render_markdown(results))


if __name__ == "__main__":
    main()
