"""Benchmark Visual ChangeNet-Classification: real MVTec AD transistor, and lights/layouts on the demo data.

1. **Transistor** (``--data``, one light: ``[UniformLight]``, TAO's 212/91 split at 256 px): train the
   ``learnable`` and the ``euclidean`` difference modules; on val report image AUROC, AP, and at the
   operating threshold chosen on train (at most ``classify.eval.max_false_alarm_rate`` of good train
   parts flagged) TAO's defect accuracy, false alarm and total accuracy. Beside them: the
   segmentation model's image AUROC (``results/segment_transistor.json``, mask maximum) and
   anomalib PatchCore's published 1.000.
2. **Deployment** of the first transistor model: ONNX export (parity), onnxruntime INT8 (judged on
   val AUROC), and CPU throughput of FP32 and INT8 with the pipeline's harness.
3. **Demo data** (``--synthetic``): the pipeline's own defaults, four lights ``linear`` against one
   light, ``grid`` and ``fused``.

Results: ``benchmarks/results/classify_transistor.json`` and a section of ``benchmarks/RESULTS.md``.

    python benchmarks/classify_transistor.py --epochs 5 --synthetic
    python benchmarks/classify_transistor.py --modules learnable --no-deploy --split-seeds 42,1,2,3

The transistor data is CC BY-NC-SA: never committed, never needed by a test.
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

from components.config import Params, load_params, set_dotted

REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO / "benchmarks" / "results" / "classify_transistor.json"
SEGMENT_JSON = REPO / "benchmarks" / "results" / "segment_transistor.json"
PATCHCORE_AUROC = 1.000  # anomalib PatchCore (Wide-ResNet-50), MVTec transistor, published
MARK_BEGIN = "<!-- classify_transistor:begin -->"
MARK_END = "<!-- classify_transistor:end -->"
SPLITS_BEGIN = "<!-- classify_transistor_splits:begin -->"
SPLITS_END = "<!-- classify_transistor_splits:end -->"
SPLIT_COLUMNS = (
    ("auroc", "image AUROC", True),
    ("ap", "AP", True),
    ("defect_accuracy", "defect accuracy at the shipped threshold", True),
    ("false_alarm_rate", "false-alarm rate at the shipped threshold", False),
)
REAL_DATA = {
    "classify.input_size": None,
    "classify.train.freeze_backbone": False,
    "classify.train.epochs": 5,
}
"""Real data: the prepared 256 px, the backbone fine-tuned (the demo's 96 px frozen backbone is for speed)."""
SYNTHETIC_VARIANTS: dict[str, dict[str, Any]] = {
    "4 lights, linear": {"classify.model.concat_type": "linear"},
    "1 light (UniformLight)": {"data.lighting_conditions": ["UniformLight"], "classify.model.concat_type": "linear"},
    "4 lights, grid 2x2": {"classify.model.concat_type": "grid"},
    "4 lights, fused": {"classify.model.concat_type": "fused"},
}


def pct(value: Any) -> str:
    return percent(value, digits=1)


def write_params(workdir: Path, name: str, overrides: dict[str, Any], real: bool) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    slug = name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    data_name = "data" if real else "data-synthetic"
    raw["paths"] = {"data_dir": str(workdir / data_name), "artifacts_dir": str(workdir / f"artifacts-{slug}")}
    if real:
        raw["data"].update({"source": "mvtec", "lighting_conditions": ["UniformLight"], "image_size": 256})
    raw["tracking"].update({"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "benchmark-classify"})
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    path = workdir / f"params-{slug}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepared(workdir: Path, name: str, overrides: dict[str, Any], real: bool) -> Params:
    from components.pipeline import steps

    params = load_params(write_params(workdir, name, overrides, real))
    if not params.raw_category_dir.exists() and not real:
        steps.synth(params)
    if not params.datasets_dir.exists():
        steps.prepare(params)
        steps.validate(params)
    return params


def train_and_evaluate(params: Params) -> dict[str, Any]:
    from components.evaluation.stage import evaluate_stage
    from components.training.train import train_model

    started = time.perf_counter()
    trained = train_model(params, "classify")
    seconds = time.perf_counter() - started
    evaluated = evaluate_stage(params, "classify", splits=("val",))
    return {"train": trained, "train_seconds": seconds, "val": {k[4:]: v for k, v in evaluated.items()}}


def deployment(params: Params) -> dict[str, Any]:
    """Export, onnxruntime INT8 and CPU throughput of the trained model (the pipeline's own stages)."""
    from components.benchmarking.bench import run_benchmark
    from components.benchmarking.stage import deploy_models
    from components.export.stage import export_stage, quantize_stage

    exported = export_stage(params, "classify")
    quantized = quantize_stage(params, "classify", backend="onnxruntime")
    timings: dict[str, Any] = {}
    for label, path in deploy_models(params, "classify").items():
        records = run_benchmark(params, path, "onnxruntime", [1, 8], precision=label, platform="cpu")
        timings[label] = {int(r["batch_size"]): float(r["pairs_per_second"]) for r in records}
    return {"export": exported, "quantize": quantized, "parts_per_second": timings}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from components.data.ingest import ingest

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    results_json = Path(getattr(args, "results_json", None) or RESULTS_JSON)
    previous = json.loads(results_json.read_text()) if results_json.is_file() else {}
    results: dict[str, Any] = {
        "data": str(args.data),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "overrides": extra,
        "transistor": previous.get("transistor", {}),
        "deploy": previous.get("deploy", {}),
        "synthetic": previous.get("synthetic", {}),
    }

    def save() -> None:
        results_json.parent.mkdir(parents=True, exist_ok=True)
        results_json.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")

    if args.modules:
        if not (workdir / "data" / "mvtec" / "transistor").exists():
            ingest(Path(args.data), "transistor", workdir / "data" / "mvtec")
        for index, module in enumerate(args.modules):
            overrides = {
                **REAL_DATA,
                "classify.train.epochs": args.epochs,
                **extra,
                "classify.model.difference_module": module,
            }
            params = prepared(workdir, f"transistor-{module}", overrides, real=True)
            print(f"[transistor {module}] training for {args.epochs} epochs", flush=True)
            results["transistor"][module] = {"overrides": overrides, **train_and_evaluate(params)}
            save()
            if index == 0 and args.deploy:
                print(f"[transistor {module}] export, INT8, CPU timing", flush=True)
                results["deploy"] = {"module": module, **deployment(params)}
                save()
    if args.synthetic:
        for name, overrides in SYNTHETIC_VARIANTS.items():
            params = prepared(workdir, f"synthetic {name}", {**overrides, **extra}, real=False)
            print(f"[synthetic {name}] training with the demo defaults", flush=True)
            results["synthetic"][name] = {"overrides": overrides, **train_and_evaluate(params)}
            save()
    save()
    return results


def render_markdown(results: dict[str, Any]) -> str:
    segment_auroc = None
    if SEGMENT_JSON.is_file():
        variants = json.loads(SEGMENT_JSON.read_text()).get("variants", {})
        values = [v.get("val", {}).get("image_auroc") for v in variants.values() if isinstance(v, dict)]
        values = [v for v in values if v is not None]
        segment_auroc = max(values) if values else None
    lines = [
        MARK_BEGIN,
        "### ChangeNet-Classification (`benchmarks/classify_transistor.py`)",
        "",
        f"On {results['machine']}, torch {results['torch']}. Val metrics; the operating threshold is chosen on the "
        "train split (most defects caught with at most 2 % of good train parts flagged), never on val. "
        "False alarm is TAO's (good parts flagged over all parts).",
        "",
    ]
    if results["transistor"]:
        lines += [
            "**MVTec AD transistor** (one light, 256 px, TAO's 212/91 split, backbone fine-tuned):",
            "",
            "| model | image AUROC | AP | defect accuracy | false alarm | total accuracy | threshold | epochs | train s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for module, entry in results["transistor"].items():
            v, t = entry["val"], entry["train"]
            lines.append(
                f"| ChangeNet-Classification, {module} | **{pct(v.get('auroc'))}** | {pct(v.get('ap'))} | "
                f"{pct(v.get('defect_accuracy'))} | {pct(v.get('false_alarm'))} | {pct(v.get('total_accuracy'))} | "
                f"{v.get('threshold', float('nan')):.3f} | {t.get('train/epochs', 0):.0f} | {entry['train_seconds']:.0f} |"
            )
        if segment_auroc is not None:
            lines.append(
                f"| ChangeNet-Segmentation, mask maximum (`segment_transistor.json`, best run) | {pct(segment_auroc)} | | | | | | | |"
            )
        lines.append(f"| anomalib PatchCore WRN-50 (published, unsupervised) | {pct(PATCHCORE_AUROC)} | | | | | | | |")
        lines.append("")
    deploy = results.get("deploy") or {}
    if deploy:
        q = deploy["quantize"]
        lines += [
            f"**Deployment on this CPU** (transistor, {deploy['module']}; onnxruntime, parts/s = test+golden pairs per second):",
            "",
            "| model | val AUROC | parts/s batch 1 | parts/s batch 8 |",
            "|---|---|---|---|",
        ]
        aurocs = {
            "classify-fp32": q.get("quantize/fp32/val_auroc"),
            "classify-int8-cpu": q.get("quantize/onnxruntime_cpu/val_auroc"),
            "classify-int8": q.get("quantize/onnxruntime/val_auroc"),
        }
        for label, per_batch in deploy["parts_per_second"].items():
            lines.append(
                f"| {label} | {pct(aurocs.get(label))} | {per_batch.get('1', per_batch.get(1, 0)):.1f} | "
                f"{per_batch.get('8', per_batch.get(8, 0)):.1f} |"
            )
        lines += [
            "",
            f"Export parity: max |logit diff| {deploy['export'].get('export/parity_max_abs_logit', float('nan')):.2e}.",
            "",
        ]
    if results["synthetic"]:
        lines += [
            "**Built-in demo data** (`params.yaml` defaults: 96 px per light, frozen ImageNet backbone, 8 epochs; layout as named):",
            "",
            "| lights and layout | image AUROC | AP | defect accuracy | false alarm | train s |",
            "|---|---|---|---|---|---|",
        ]
        for name, entry in results["synthetic"].items():
            v = entry["val"]
            lines.append(
                f"| {name} | **{pct(v.get('auroc'))}** | {pct(v.get('ap'))} | {pct(v.get('defect_accuracy'))} | "
                f"{pct(v.get('false_alarm'))} | {entry['train_seconds']:.0f} |"
            )
    lines.append(MARK_END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad_256" / "transistor")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/inspectops-classify-benchmark"))
    parser.add_argument(
        "--modules", nargs="*", default=["learnable", "euclidean"], help="transistor variants; none: skip"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--deploy", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--synthetic", action="store_true", help="also the lights/layout comparison on the demo data")
    parser.add_argument("--set", action="append", default=[], help="param override, e.g. classify.train.lr=3e-4")
    split_seeds.add_option(parser)
    args = parser.parse_args()
    if split_seeds.requested(args):
        report_over_splits(args)
        return
    results = run(args)
    update_results_md(render_markdown(results), MARK_BEGIN, MARK_END)
    print(render_markdown(results))


def report_over_splits(args: argparse.Namespace) -> None:
    """``--split-seeds``: the transistor models once per split (the demo comparison is not a split's)."""
    args.synthetic = False
    runs = split_seeds.run_over_splits(args, run, RESULTS_JSON.parent, "classify_transistor")
    per_split = {
        f"ChangeNet-Classification, {module}": {
            seed: result["transistor"][module]["val"] for seed, result in runs.items()
        }
        for module in args.modules
    }
    options = [f"--epochs {args.epochs}", "--modules " + " ".join(args.modules)]
    options += [] if args.deploy else ["--no-deploy"]
    split_seeds.publish(
        RESULTS_JSON.parent,
        "classify_transistor",
        "ChangeNet-Classification over seeded splits (transistor, val)",
        split_seeds.command_line("classify_transistor.py", options, args),
        per_split,
        SPLIT_COLUMNS,
        (SPLITS_BEGIN, SPLITS_END),
        update_results_md,
    )


if __name__ == "__main__":
    main()
