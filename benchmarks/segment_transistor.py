"""Benchmark Visual ChangeNet-Segmentation on the real MVTec AD transistor category.

Ingests the category, prepares TAO's 212/91 split, measures the difference baseline,
trains the default backbone within a CPU time budget (with and without its ImageNet
weights), evaluates on val, measures training throughput, and records everything in
``benchmarks/results/segment_transistor.json`` and ``benchmarks/RESULTS.md``.

    python benchmarks/segment_transistor.py --minutes 15
    python benchmarks/segment_transistor.py --minutes 35 --variants package --overlay infra/params/cpu-transistor.yaml
    python benchmarks/segment_transistor.py --data /path/to/mvtec/transistor --variants pretrained
    python benchmarks/segment_transistor.py --minutes 35 --variants package --split-seeds 42,1,2,3

The data path defaults to ``../shared/data/mvtec_ad_256/transistor`` (never committed: CC BY-NC-SA).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import split_seeds  # run as a script from benchmarks/
import torch
import yaml

from components.config import load_params

REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO / "benchmarks" / "results" / "segment_transistor.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
TAO_CARD = {"precision": 94.5, "recall": 89.8, "f1": 92.0, "iou": 86.15, "oa": 99.57}
MARK_BEGIN = "<!-- segment_transistor:begin -->"
MARK_END = "<!-- segment_transistor:end -->"
SPLITS_BEGIN = "<!-- segment_transistor_splits:begin -->"
SPLITS_END = "<!-- segment_transistor_splits:end -->"
SPLIT_COLUMNS = (
    ("iou", "val change-IoU", True),
    ("per_kind_iou", "mean per-kind IoU", True),
    ("image_auroc", "image AUROC", True),
    ("image_defect_recall", "defect recall at the shipped threshold", True),
    ("image_false_alarm_rate", "false-alarm rate at the shipped threshold", False),
)


def write_params(
    workdir: Path,
    minutes: float,
    pretrained: str,
    backbone: str,
    extra: dict[str, Any],
    name: str | None = None,
    overlay: Path | None = None,
) -> Path:
    """Repository params (+ ``overlay``) with this benchmark's data, budget and tracking store, as ``params-<name>.yaml``."""
    from components.config import merge_overlay, set_dotted

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if overlay is not None:
        raw = merge_overlay(raw, yaml.safe_load(overlay.read_text()) or {})
    raw["paths"] = {"data_dir": str(workdir / "data"), "artifacts_dir": str(workdir / f"artifacts-{pretrained}")}
    raw["data"].update({"source": "mvtec", "lighting_conditions": ["UniformLight"], "image_size": 256})
    raw["tracking"].update({"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "benchmark-transistor"})
    train = raw["segment"]["train"]
    train.update({"max_minutes": minutes})
    raw["segment"]["model"].update({"pretrained": pretrained, "backbone": backbone})
    for dotted, value in extra.items():
        set_dotted(raw, dotted, value)
    path = workdir / f"params-{name or pretrained}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def measure_throughput(backbone: str, embed_dim: int = 256, batch: int = 8, size: int = 256, steps: int = 4) -> float:
    """Training pairs/s (forward + deep-supervision loss + backward + AdamW step) on this machine."""
    from components.models.changenet.losses import DeepSupervisionLoss
    from components.models.changenet.model import ChangeNetSegment

    torch.manual_seed(0)
    model = ChangeNetSegment(backbone=backbone, embed_dim=embed_dim).train()
    loss_fn = DeepSupervisionLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    test, golden = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
    mask = (torch.rand(batch, size, size) > 0.98).long()

    def step() -> None:
        optimizer.zero_grad()
        loss, _ = loss_fn(model(test, golden), mask)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


# Per-epoch series kept beside the IoU curve, so a dip can be read: lost recall, false alarms, or a loss spike.
HISTORY_KEYS = ("val/iou", "val/precision", "val/recall", "val/image_auroc", "val/loss", "train/loss_epoch")


def epoch_history(params: Any, keys: tuple[str, ...] = HISTORY_KEYS) -> dict[str, list[float]]:
    """Each metric in ``keys`` per epoch, read back from the training's MLflow run (empty if not found)."""
    try:
        from mlflow.tracking import MlflowClient

        from components.training.runs import training_run

        run_id = training_run(params, "segment")["run_id"]
        client = MlflowClient(params.tracking.tracking_uri)
        history = {key: client.get_metric_history(run_id, key) for key in keys}
        return {
            key: [m.value for m in sorted(points, key=lambda m: m.step)] for key, points in history.items() if points
        }
    except Exception:  # a missing curve must not lose the benchmark's numbers
        return {}


def iou_curve(variant: dict[str, Any]) -> list[float]:
    """A variant's val change-IoU per epoch: its history's ``val/iou`` (JSONs before the history kept ``val_curve``)."""
    return variant.get("history", {}).get("val/iou") or variant.get("val_curve", [])


def run(args: argparse.Namespace) -> dict[str, Any]:
    from components.data.ingest import ingest
    from components.evaluation.stage import evaluate_stage
    from components.models.changenet.baselines import difference_baseline
    from components.pipeline import steps
    from components.training.train import train_model

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = dict(item.split("=", 1) for item in args.set)
    overrides = {k: yaml.safe_load(v) for k, v in overrides.items()}
    results_json = Path(getattr(args, "results_json", None) or RESULTS_JSON)
    results: dict[str, Any] = {
        "data": str(args.data),
        "minutes_budget": args.minutes,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "overrides": overrides,
        "overlay": str(args.overlay) if args.overlay else None,
        "variants": {},
    }
    started = time.perf_counter()
    ingest(Path(args.data), "transistor", workdir / "data" / "mvtec")
    results["ingest_seconds"] = time.perf_counter() - started
    for variant in args.variants:
        params_path = write_params(workdir, args.minutes, variant, args.backbone, overrides, overlay=args.overlay)
        params = load_params(params_path)
        started = time.perf_counter()
        counts = steps.prepare(params)
        results["prepare_seconds"] = time.perf_counter() - started
        results["split"] = {"train": counts["segment/train"], "val": counts["segment/val"]}
        steps.validate(params)
        results["difference_baseline"] = difference_baseline(params.datasets_dir, "val")
        print(f"[{variant}] training {args.backbone} for up to {args.minutes} min", flush=True)
        trained = train_model(params, "segment")
        evaluated = evaluate_stage(params, "segment")
        results["image_score"] = params.segment.eval.image_score
        results["variants"][variant] = {
            "train": trained,
            "val": {k[4:]: v for k, v in evaluated.items() if k.startswith("val/")},
            "history": epoch_history(params),  # the IoU curve is its val/iou
        }
        results_json.parent.mkdir(parents=True, exist_ok=True)
        results_json.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    if args.throughput:
        torch.set_num_threads(torch.get_num_threads())
        results["throughput_embed_dim"] = args.throughput_embed_dim
        results["throughput"] = {
            name: measure_throughput(name, args.throughput_embed_dim)
            for name in (args.backbone, "fan_small_12_p4_hybrid")
        }
    results_json.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    return results


def pct(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage for the RESULTS.md tables; ``n/a`` when missing or NaN."""
    return "n/a" if value is None or value != value else f"{100 * value:.{digits}f}"


def render_markdown(results: dict[str, Any]) -> str:
    """The RESULTS.md section: measured numbers beside the TAO card and the difference baseline."""
    base = results.get("difference_baseline", {})
    lines = [
        MARK_BEGIN,
        "## ChangeNet-Segmentation on MVTec AD transistor (val, 91 images)",
        "",
        f"`python benchmarks/segment_transistor.py --minutes {results['minutes_budget']:g}"
        + (f" --overlay {results['overlay']}" if results.get("overlay") else "")
        + f"` on {results['machine']}, "
        f"torch {results['torch']}; split {results.get('split')}; CPU training budget {results['minutes_budget']:g} min per variant.",
        "",
        "| model | P | R | F1 | IoU | OA | mIoU | image AUROC | epochs | train pairs/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| TAO card: FAN-Hybrid-Base, ImageNet-pretrained | 94.5 | 89.8 | 92.0 | 86.15 | 99.57 | | | | |",
        f"| difference baseline (best threshold on val) | {pct(base.get('precision'))} | {pct(base.get('recall'))} | "
        f"{pct(base.get('f1'))} | {pct(base.get('iou'))} | | | | | |",
    ]
    for variant, data in results["variants"].items():
        v, t = data["val"], data["train"]
        label = "ImageNet (PyPI package)" if variant == "package" else "from scratch" if variant == "none" else variant
        lines.append(
            f"| {results.get('backbone', 'tf_efficientnet_lite0')}, {label} | {pct(v.get('precision'))} | {pct(v.get('recall'))} | "
            f"{pct(v.get('f1'))} | {pct(v.get('iou'))} | {pct(v.get('oa'))} | {pct(v.get('miou'))} | "
            f"{pct(v.get('image_auroc'))} | {t.get('train/epochs', 0):.0f} | {t.get('train/samples_per_second', t.get('train/pairs_per_second', 0)):.1f} |"
        )
    per_kind = {
        variant: {k[4:]: v for k, v in data["val"].items() if k.startswith("iou/")}
        for variant, data in results["variants"].items()
    }
    if per_kind:
        kinds = sorted({k for d in per_kind.values() for k in d})
        lines += [
            "",
            "Change-class IoU per defect kind (val):",
            "",
            "| model | " + " | ".join(kinds) + " |",
            "|---" * (len(kinds) + 1) + "|",
        ]
        for variant, d in per_kind.items():
            lines.append(f"| {variant} | " + " | ".join(pct(d.get(k)) for k in kinds) + " |")
    verdicts = {variant: data["val"] for variant, data in results["variants"].items()}
    if verdicts:
        from components.models.changenet.image_score import IMAGE_SCORES

        lines += [
            "",
            "Image-level verdict (val): image AUROC of each score rule; defect recall and false-alarm rate at the "
            "threshold chosen on train (at most 2 % of good train parts flagged), for the rule in "
            "`segment.eval.image_score`:",
            "",
            "| model | "
            + " | ".join(f"AUROC {rule}" for rule in IMAGE_SCORES)
            + " | rule | defect recall | false alarm |",
            "|---" * (len(IMAGE_SCORES) + 4) + "|",
        ]
        for variant, v in verdicts.items():
            lines.append(
                f"| {variant} | "
                + " | ".join(pct(v.get(f"image_auroc/{rule}")) for rule in IMAGE_SCORES)
                + f" | {results.get('image_score', '')} | {pct(v.get('image_defect_recall'))} | "
                f"{pct(v.get('image_false_alarm_rate'))} |"
            )
        curves = {variant: curve for variant, data in results["variants"].items() if (curve := iou_curve(data))}
        for variant, curve in curves.items():
            lines += ["", f"Val change-IoU per epoch ({variant}): " + ", ".join(pct(x, 1) for x in curve)]
    if "throughput" in results:
        width = results.get("throughput_embed_dim", 256)
        lines += [
            "",
            f"Training throughput, 256x256 pairs, batch 8, forward + 5-output loss + backward + AdamW, decoder embed_dim {width}, CPU:",
            "",
            "| backbone | pairs/s |",
            "|---|---|",
        ]
        lines += [f"| {name} | {value:.2f} |" for name, value in results["throughput"].items()]
    lines.append(MARK_END)
    return "\n".join(lines)


def update_results_md(section: str, begin: str = MARK_BEGIN, end: str = MARK_END, path: Path | None = None) -> None:
    """Replace the section between ``begin`` and ``end`` in RESULTS.md, or ``path`` (append it the first time)."""
    path = path or RESULTS_MD
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mvtec_ad_256" / "transistor"))
    parser.add_argument("--minutes", type=float, default=15.0, help="CPU training budget per variant")
    parser.add_argument("--workdir", default="/tmp/inspectops-bench-transistor")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--variants", nargs="+", default=["package", "none"], help="pretrained sources to compare")
    parser.add_argument("--set", nargs="*", action="extend", default=[], help="extra params overrides, key=value")
    parser.add_argument(
        "--overlay", type=Path, help="params overlay applied to params.yaml first (infra/params/*.yaml)"
    )
    parser.add_argument("--no-throughput", dest="throughput", action="store_false")
    parser.add_argument("--throughput-embed-dim", type=int, default=256, help="decoder width for the throughput rows")
    split_seeds.add_option(parser)
    args = parser.parse_args()
    if split_seeds.requested(args):
        report_over_splits(args)
        return
    results = run(args)
    results["backbone"] = args.backbone
    update_results_md(render_markdown(results))
    print(render_markdown(results))


def split_metrics(val: dict[str, float]) -> dict[str, float]:
    """The numbers a split row shows: the val metrics plus the mean IoU over defect kinds."""
    kinds = [v for k, v in val.items() if k.startswith("iou/")]
    return {**val, "per_kind_iou": sum(kinds) / len(kinds) if kinds else float("nan")}


def report_over_splits(args: argparse.Namespace) -> None:
    """``--split-seeds``: the whole benchmark once per split, then a section with the mean and the worst."""
    args.throughput = False  # a machine property, not a split's
    runs = split_seeds.run_over_splits(args, run, RESULTS_JSON.parent, "segment_transistor")
    per_split = {
        variant: {seed: split_metrics(result["variants"][variant]["val"]) for seed, result in runs.items()}
        for variant in args.variants
    }
    options = [f"--minutes {args.minutes:g}", "--variants " + " ".join(args.variants)]
    options += [f"--overlay {args.overlay}"] if args.overlay else []
    split_seeds.publish(
        RESULTS_JSON.parent,
        "segment_transistor",
        "ChangeNet-Segmentation over seeded splits (transistor, val)",
        split_seeds.command_line("segment_transistor.py", options, args),
        per_split,
        SPLIT_COLUMNS,
        (SPLITS_BEGIN, SPLITS_END),
        update_results_md,
    )


if __name__ == "__main__":
    main()
