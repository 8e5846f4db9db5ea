"""Benchmark MAL on the real MVTec AD transistor category, and ChangeNet trained on its masks.

1. Ingest transistor, prepare TAO's 212/91 split (its COCO files: 31 train boxes, 13 val).
2. Train MAL from the train boxes only, and from train + val boxes (boxes are MAL's input at
   labelling time; val *masks* are never read by training). Score each on the val boxes against
   the true masks: mIoU overall, per defect kind and per size bucket, beside the filled-box and
   box+CRF baselines and TAO's published 0.788 (COCO, class-averaged).
3. Label the train boxes with MAL, then train ChangeNet-Segmentation twice with the same budget,
   on the true train masks and on MAL's, and score both on the true val masks.

Results: ``benchmarks/results/mal_transistor.json`` and a table in ``benchmarks/RESULTS.md``.

    python benchmarks/mal_transistor.py --data ../shared/data/mvtec_ad_256/transistor --segment-epochs 3

The data is CC BY-NC-SA: never committed, never needed by a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import split_seeds
import torch
import yaml
from segment_transistor import pct as percent
from segment_transistor import update_results_md  # run as a script from benchmarks/

from components.config import load_params, set_dotted

REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO / "benchmarks" / "results" / "mal_transistor.json"
TAO_MAL_MIOU = 0.788
MARK_BEGIN = "<!-- mal_transistor:begin -->"
SPLITS_BEGIN = "<!-- mal_transistor_splits:begin -->"
SPLITS_END = "<!-- mal_transistor_splits:end -->"
SPLIT_COLUMNS = (("miou", "mask mIoU (ChangeNet: change-IoU)", True),)
MARK_END = "<!-- mal_transistor:end -->"


def write_params(workdir: Path, name: str, overrides: dict[str, Any]) -> Path:
    """Repository params on the ingested transistor data, one artifacts folder per variant."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = {"data_dir": str(workdir / "data"), "artifacts_dir": str(workdir / f"artifacts-{name}")}
    raw["data"].update({"source": "mvtec", "lighting_conditions": ["UniformLight"], "image_size": 256})
    raw["tracking"].update({"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "benchmark-mal"})
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    path = workdir / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _prepared(workdir: Path, name: str, overrides: dict[str, Any], source: Path | None = None) -> Any:
    """Params for a variant whose datasets are prepared (copied from ``source`` when given)."""
    import shutil

    from components.pipeline import steps

    params = load_params(write_params(workdir, name, overrides))
    if source is not None and not params.datasets_dir.exists():
        shutil.copytree(source, params.datasets_dir)
    elif not params.datasets_dir.exists():
        steps.prepare(params)
        steps.validate(params)
    return params


def run(args: argparse.Namespace) -> dict[str, Any]:
    from components.data.ingest import ingest
    from components.evaluation.stage import evaluate_stage
    from components.labeling.pipeline import label_stage
    from components.training.train import model_dir, train_model

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    results: dict[str, Any] = {
        "data": str(args.data),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "overrides": extra,
        "mal": {},
        "segment": {},
    }
    results_json = Path(getattr(args, "results_json", None) or RESULTS_JSON)
    if results_json.is_file():  # keep the rows of variants this run skips (--mal-variants none)
        previous = json.loads(results_json.read_text())
        results["mal"] = {k: v for k, v in previous.get("mal", {}).items() if k not in args.mal_variants}
        results["segment"] = previous.get("segment", {}) if args.segment_epochs <= 0 else {}
    if not (workdir / "data" / "mvtec" / "transistor").exists():
        ingest(Path(args.data), "transistor", workdir / "data" / "mvtec")
    base = _prepared(workdir, "mal-train", extra)
    coco = json.loads((base.datasets_dir / "coco" / "train.json").read_text())
    val_coco = json.loads((base.datasets_dir / "coco" / "val.json").read_text())
    results["boxes"] = {"train": len(coco["annotations"]), "val": len(val_coco["annotations"])}

    def save() -> None:
        results_json.parent.mkdir(parents=True, exist_ok=True)
        results_json.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")

    for name, use_val in (("mal-train", False), ("mal-train+val", True)):
        if name not in args.mal_variants:
            continue
        params = _prepared(workdir, name, {**extra, "mal.train.use_val_boxes": use_val}, base.datasets_dir)
        print(f"[{name}] training MAL", flush=True)
        started = time.perf_counter()
        trained = train_model(params, "mal")
        seconds = time.perf_counter() - started
        # The last checkpoint, not the best on val: with val boxes in training, picking the epoch
        # on the val masks would grade the model on what chose it.
        last = model_dir(params, "mal") / "last.ckpt"
        evaluated = evaluate_stage(params, "mal", checkpoint=last, splits=("val",))
        entry = {"train": trained, "train_seconds": seconds, "val": {k[4:]: v for k, v in evaluated.items()}}
        if name == "mal-train":
            entry["label"] = label_stage(params)
        results["mal"][name] = entry
        save()

    if args.segment_epochs > 0:
        labelled = workdir / "artifacts-mal-train" / "labels"
        for name, labels in (("segment-true-masks", "masks"), ("segment-mal-masks", "mal")):
            # The same number of epochs for both, not the same minutes: a wall-clock budget would
            # let a busier machine give one variant fewer epochs than the other.
            overrides = {**extra, "segment.train.labels": labels, "segment.train.epochs": args.segment_epochs}
            params = _prepared(workdir, name, overrides, base.datasets_dir)
            if labels == "mal" and not (params.paths.artifacts_dir / "labels").exists():
                import shutil

                shutil.copytree(labelled, params.paths.artifacts_dir / "labels")
            print(f"[{name}] training ChangeNet-Segmentation for {args.segment_epochs} epochs", flush=True)
            trained = train_model(params, "segment")
            evaluated = evaluate_stage(params, "segment", splits=("val",))
            results["segment"][name] = {"train": trained, "val": {k[4:]: v for k, v in evaluated.items()}}
            save()
    save()
    return results


def pct(value: Any) -> str:
    return percent(value, digits=1)


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        MARK_BEGIN,
        "### MAL on MVTec AD transistor (`benchmarks/mal_transistor.py`)",
        "",
        f"`python benchmarks/mal_transistor.py` on {results['machine']}, torch {results['torch']}; "
        f"boxes: {results['boxes']['train']} train, {results['boxes']['val']} val; overrides {results['overrides'] or 'none'}. "
        "Mask IoU of every val box against its true mask, last checkpoint (mean over instances; TAO's 0.788 is "
        "ViT-B on COCO val, class-averaged, for scale only).",
        "",
        "| MAL trained on | mIoU | class-mean mIoU | filled box | box + CRF (no network) | train s | per defect kind |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in results["mal"].items():
        v = entry["val"]
        kinds = ", ".join(f"{k.split('/', 1)[1]} {pct(x)}" for k, x in sorted(v.items()) if k.startswith("miou/"))
        lines.append(
            f"| {name.removeprefix('mal-')} boxes | **{pct(v.get('miou'))}** | {pct(v.get('miou_class_mean'))} | "
            f"{pct(v.get('baseline_box/miou'))} | {pct(v.get('baseline_crf/miou'))} | {entry['train_seconds']:.0f} | {kinds} |"
        )
    label = results["mal"].get("mal-train", {}).get("label")
    if label:
        lines += [
            "",
            f"MAL's labels of the train boxes (what ChangeNet trains on): mIoU {pct(label.get('label/train_miou'))} "
            f"against the true train masks, {label['label/empty_masks']:.0f} empty of {label['label/annotations']:.0f}.",
        ]
    if results["segment"]:
        lines += [
            "",
            "| ChangeNet-Segmentation trained on | val IoU | F1 | image AUROC | epochs |",
            "|---|---|---|---|---|",
        ]
        for name, entry in results["segment"].items():
            v, t = entry["val"], entry["train"]
            lines.append(
                f"| {name.removeprefix('segment-').replace('-', ' ')} | **{pct(v.get('iou'))}** | {pct(v.get('f1'))} | "
                f"{pct(v.get('image_auroc'))} | {t.get('train/epochs', 0):.0f} |"
            )
    lines.append(MARK_END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad_256" / "transistor")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/inspectops-mal-benchmark"))
    parser.add_argument(
        "--mal-variants", nargs="+", default=["mal-train", "mal-train+val"], help="'none' keeps the recorded rows"
    )
    parser.add_argument("--segment-epochs", type=int, default=3, help="ChangeNet epochs per variant (0: skip)")
    parser.add_argument("--set", action="append", default=[], help="param override, e.g. mal.train.epochs=20")
    split_seeds.add_option(parser)
    args = parser.parse_args()
    if split_seeds.requested(args):
        report_over_splits(args)
        return
    results = run(args)
    update_results_md(render_markdown(results), MARK_BEGIN, MARK_END)
    print(render_markdown(results))


def report_over_splits(args: argparse.Namespace) -> None:
    """``--split-seeds``: MAL (and the ChangeNet rows) once per split, then the mean and the worst."""
    runs = split_seeds.run_over_splits(args, run, RESULTS_JSON.parent, "mal_transistor")
    per_split: dict[str, dict[int, dict[str, float]]] = {}
    for seed, result in runs.items():
        for name, entry in result["mal"].items():
            per_split.setdefault(f"MAL, {name.removeprefix('mal-')} boxes", {})[seed] = entry["val"]
        for name, entry in result["segment"].items():
            per_split.setdefault(f"ChangeNet on {name.removeprefix('segment-')}", {})[seed] = entry["val"]
    options = ["--mal-variants " + " ".join(args.mal_variants), f"--segment-epochs {args.segment_epochs}"]
    rows = {
        model: {seed: {**m, "miou": m.get("miou", m.get("iou"))} for seed, m in s.items()}
        for model, s in per_split.items()
    }
    split_seeds.publish(
        RESULTS_JSON.parent,
        "mal_transistor",
        "MAL over seeded splits (transistor, val; ChangeNet rows: val change-IoU as miou)",
        split_seeds.command_line("mal_transistor.py", options, args),
        rows,
        SPLIT_COLUMNS,
        (SPLITS_BEGIN, SPLITS_END),
        update_results_md,
    )


if __name__ == "__main__":
    main()
