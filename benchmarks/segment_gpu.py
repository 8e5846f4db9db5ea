"""ChangeNet-Segmentation on a GPU box: train within a time budget, evaluate, time the GPU runtimes.

Made for a lent GPU machine (an H200 here) where only the model's own libraries are installed:
torch, timm, lightning, onnx, onnxruntime, numpy, pandas, pillow, pyyaml and pydantic (carry its
wheels; README, "Benchmarking on a GPU box"). Nothing on the tracking side is imported (MLflow,
Prefect, DVC, Great Expectations): the trainer is the shared train stage's own
:func:`~components.training.train.build_trainer` with a CSV logger, in place of ``train_model``,
which logs to MLflow; Great Expectations' data validation is skipped.

1. Params: ``params.yaml`` + ``infra/params/gpu-retrain.yaml`` (merged as
   ``infra/scripts/render_params.py`` does), then this run's folders and device, then ``--set``
   overrides, validated by the project's schema.
2. Data: ingest ``--data`` (an MVTec AD category folder or archive) into ``--workdir`` and prepare
   TAO's split there (212 train / 91 val pairs for transistor).
3. Train until the wall-clock budget runs out (``--minutes`` less ``--reserve-minutes`` for
   evaluation and timing: Lightning's ``max_time``), then evaluate the best checkpoint on val
   (change-IoU, F1, image AUROC, ...) on the GPU.
4. Time the trained model with the code behind ``inspectops benchmark --device cuda``
   (:func:`components.benchmarking.bench.measure`): each runtime variant at each batch size.
   A runtime this machine lacks is recorded with its reason, a variant the remaining time cannot
   fit is recorded as skipped: no number is made up.

Writes ``benchmarks/results/segment_gpu.json`` (after every phase, so a cut-off run keeps what it
measured) and its section in ``benchmarks/RESULTS.md``.

    python benchmarks/segment_gpu.py --minutes 8
    python benchmarks/segment_gpu.py --set segment.model.embed_dim=128 --set segment.train.precision=bf16-mixed
    python benchmarks/segment_gpu.py --render-only benchmarks/results/gpu/*.json  # the section, from JSONs
    python benchmarks/segment_gpu.py --device cpu --minutes 3 --data /tmp/synthetic/transistor  # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # the budget counts from here, imports included
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the checkout's components, even where the project is not installed (a GPU box)
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402
from segment_transistor import pct, update_results_md  # noqa: E402  (run as a script from benchmarks/)

from components.benchmarking.variants import RuntimeVariant, parse_variant  # noqa: E402

RESULTS_JSON = REPO / "benchmarks" / "results" / "segment_gpu.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
OVERLAY = REPO / "infra" / "params" / "gpu-retrain.yaml"
MARK_BEGIN = "<!-- segment_gpu:begin -->"
MARK_END = "<!-- segment_gpu:end -->"
FAMILY = "segment"
RECORDED_TRAIN_SETTINGS = {
    "batch_size",
    "precision",
    "lr",
    "epochs",
    "num_workers",
    "early_stopping_patience",
    "ema",
    "grad_clip_norm",
    "defect_share",
    "freeze_backbone_levels",
    "dice_on_good_batches",
}
"""``segment.train`` keys each result JSON keeps, so recipes that differ in them can be told apart."""

CUDA_VARIANTS: tuple[str, ...] = (
    "pytorch cuda fp32",
    "pytorch cuda fp16 channels-last compile",  # second: the headline number goes before the budget gets short
    "pytorch cuda bf16",
    "pytorch cuda fp16",
    "pytorch cuda fp16 channels-last",
    "onnxruntime cuda",
    "tensorrt fp16",
)
CPU_VARIANTS: tuple[str, ...] = ("pytorch cpu fp32", "pytorch cpu bf16 channels-last", "onnxruntime cpu")
COMPILE_SECONDS = 60.0
"""What one ``torch.compile`` (one batch size) may take on the GPU: ~60 s for FAN-B ChangeNet (STACK_NOTES)."""
MIN_TRAIN_MINUTES = 0.25


def default_data() -> Path:
    """``../shared/data/mvtec_ad_256/transistor`` beside the checkout, else ``shared/`` inside it (a device copy)."""
    beside = REPO.parent / "shared" / "data" / "mvtec_ad_256" / "transistor"
    inside = REPO / "shared" / "data" / "mvtec_ad_256" / "transistor"
    return beside if beside.exists() or not inside.exists() else inside


# ---------------------------------------------------------------------------- params


def raw_params(workdir: Path, device: str, overrides: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``params.yaml`` + the GPU-retrain overlay + this run's folders, device and timing, then ``--set``."""
    from components.config import merge_overlay, set_dotted

    raw = merge_overlay(yaml.safe_load((REPO / "params.yaml").read_text()), yaml.safe_load(OVERLAY.read_text()))
    raw["paths"] = {"data_dir": str(workdir / "data"), "artifacts_dir": str(workdir / "artifacts")}
    raw["tracking"] = {**raw.get("tracking", {}), "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}"}  # never used
    if device == "cpu":  # the overlay's 16-mixed is GPU-only in Lightning
        raw["segment"]["train"].update({"accelerator": "cpu", "precision": "32-true"})
    raw["benchmark"].update(
        {
            "warmup_seconds": args.warmup_seconds,
            "duration_seconds": args.bench_seconds,
            "min_iterations": args.min_iterations,
        }
    )
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    return raw


def parse(raw: dict[str, Any]) -> Any:
    from components.config import parse_params

    return parse_params(raw, "params.yaml + infra/params/gpu-retrain.yaml + segment_gpu.py")


# ---------------------------------------------------------------------------- train and evaluate


class _OnDevice(torch.nn.Module):
    """Evaluation's model on the GPU: batches go in from the CPU loader, float outputs come back to it."""

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        super().__init__()
        self.model = model.to(device)
        self.device = device

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(test.to(self.device), golden.to(self.device))
        outputs = outputs if isinstance(outputs, list | tuple) else (outputs,)
        return tuple(output.float().cpu() for output in outputs)


def train(params: Any, workdir: Path) -> dict[str, Any]:
    """Fit with the shared stage's trainer (checkpoints, early stopping, ``max_time``), logging to CSV only."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import CSVLogger

    from components.models.family import get_family
    from components.training.train import ThroughputMeter, build_trainer

    family = get_family(FAMILY)
    L.seed_everything(params.training_seed, workers=True)
    settings = family.trainer_settings(params)
    datamodule = family.build_datamodule(params)
    module = family.build_module(params)
    checkpoints = workdir / "checkpoints"
    meter = ThroughputMeter()
    logger = CSVLogger(workdir / "logs", name=FAMILY)
    trainer = build_trainer(settings, family.monitor, checkpoints, logger, meter, params.training_seed)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - started
    best = checkpoints / "best.ckpt"
    if not best.exists():  # no validation epoch finished inside the budget
        best = checkpoints / "last.ckpt"
    early = any(isinstance(cb, EarlyStopping) and cb.stopped_epoch > 0 for cb in trainer.callbacks)
    curve = val_curve(Path(trainer.logger.log_dir) / "metrics.csv")  # type: ignore[union-attr]
    epochs = int(trainer.current_epoch)
    score = trainer.checkpoint_callback.best_model_score  # type: ignore[union-attr]
    del trainer, module, datamodule
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "epochs": epochs,
        "max_epochs": settings.epochs,
        "budget_minutes": settings.max_minutes,
        "stopped_by": "early stopping" if early else "epochs" if epochs >= settings.epochs else "time budget",
        "seconds": seconds,
        "samples_per_second": meter.pairs_per_second,
        f"best_{family.monitor.replace('/', '_')}": float(score) if score is not None else None,
        "precision": settings.precision,
        "checkpoint": str(best),
        "val_curve": curve,
    }


CURVE_KEYS = ("val/iou", "val/image_auroc", "val/loss")


def val_curve(metrics_csv: Path) -> list[dict[str, float]]:
    """Per-epoch validation values from the CSV logger: what shows a collapse, or its absence."""
    import csv

    if not metrics_csv.exists():
        return []
    by_epoch: dict[int, dict[str, float]] = {}
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            values = {key: float(row[key]) for key in CURVE_KEYS if row.get(key) not in (None, "")}
            if values and row.get("epoch") not in (None, ""):
                by_epoch.setdefault(int(float(row["epoch"])), {}).update(values)
    return [{"epoch": epoch, **by_epoch[epoch]} for epoch in sorted(by_epoch)]


def evaluate(params: Any, checkpoint: Path, device: str) -> dict[str, float]:
    """The family's own evaluation of ``checkpoint`` on val (the model run on ``device``)."""
    from components.models.family import get_family

    family = get_family(FAMILY)
    module = family.load_module(checkpoint)  # .model: the weights to evaluate and deploy
    values = family.evaluate(_OnDevice(module.model, device), params, "val")
    del module
    if device == "cuda":
        torch.cuda.empty_cache()
    return values


# ---------------------------------------------------------------------------- timing


def export_onnx(params: Any, checkpoint: Path, out: Path) -> Path:
    """The FP32 ONNX that ONNX Runtime and TensorRT time (parity-checked like the export stage's)."""
    from components.export.onnx_export import export_onnx as export
    from components.models.family import get_family

    family = get_family(FAMILY)
    module = family.load_module(checkpoint)
    inputs = family.sample_inputs(params, "val", params.export.parity_samples)
    export(
        family.export_module(module, params),
        out,
        params.export,
        inputs,
        family.onnx_input_names,
        family.onnx_output_names(params),
    )
    return out


def time_variants(
    params: Any,
    checkpoint: Path,
    variants: list[RuntimeVariant],
    sizes: tuple[int, ...],
    deadline: float,
    workdir: Path,
    save: Any,
) -> list[dict[str, Any]]:
    """Each variant through :func:`~components.benchmarking.bench.measure`; a status and reason for the rest."""
    from components.benchmarking.bench import measure
    from components.benchmarking.runtimes import RuntimeUnavailable, check_available

    bench = params.benchmark
    rows: list[dict[str, Any]] = []
    onnx: Path | None = None
    for variant in variants:
        row: dict[str, Any] = {"variant": variant.label, "slug": variant.slug, "status": "ok", "message": ""}
        rows.append(row)
        needed = len(sizes) * (bench.warmup_seconds + bench.duration_seconds + 3.0)
        needed += len(sizes) * COMPILE_SECONDS if variant.compile_mode else 0.0
        left = deadline - time.perf_counter()
        if left < needed:
            row.update(status="skipped", message=f"time budget: {left:.0f} s left, about {needed:.0f} s needed")
            print(f"[timing] {variant.label}: skipped ({row['message']})", flush=True)
            save()
            continue
        print(f"[timing] {variant.label} at batch {', '.join(map(str, sizes))}", flush=True)
        started = time.perf_counter()
        try:
            check_available(variant)
            model = checkpoint
            if variant.runtime != "pytorch":
                onnx = onnx or export_onnx(params, checkpoint, workdir / "onnx" / "segment_fp32.onnx")
                model = onnx
            records = measure(params, model, variant, sizes, work_dir=workdir / "engines", opt_batch=max(sizes))
            row["variant"] = records[0]["variant"]  # with the precision read from the ONNX
            row["results"] = records
        except RuntimeUnavailable as error:
            row.update(status="unavailable", message=str(error))
        except Exception as error:  # an OOM or a compile failure must not cost the other variants
            row.update(status="failed", message=f"{type(error).__name__}: {error}")
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        row["seconds"] = time.perf_counter() - started
        for record in row.get("results", []):
            print(
                f"  batch {record['batch_size']:>3}: {record['pairs_per_second']:.1f} pairs/s, "
                f"median {record['latency_median_ms']:.2f} ms (prepare {record['prepare_seconds'] or 0:.1f} s)",
                flush=True,
            )
        if row["status"] != "ok":
            print(f"  {row['status']}: {row['message'][:300]}", flush=True)
        save()
    return rows


# ---------------------------------------------------------------------------- the run


def _finite(value: Any) -> Any:
    """NaN (e.g. a precision with nothing predicted) as null: the JSON stays standard."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def machine(device: str) -> dict[str, Any]:
    from components.benchmarking.runtimes import cpu_name, device_name

    info: dict[str, Any] = {
        "device": device,
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device == "cuda":
        info.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()})
    for name in ("lightning", "timm", "onnxruntime", "pydantic"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # a missing optional library is a fact to record, not a failure
            info[name] = None
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    from components.benchmarking.runtimes import require_cuda
    from components.data.ingest import ingest
    from components.data.prepare import prepare_datasets

    started = STARTED
    deadline = started + args.minutes * 60.0
    if args.device == "cuda":
        require_cuda("benchmarks/segment_gpu.py --device cuda")
    variants = [
        parse_variant(text) for text in args.variants or (CUDA_VARIANTS if args.device == "cuda" else CPU_VARIANTS)
    ]
    sizes = tuple(int(part) for part in args.batch_sizes.split(",") if part.strip())
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    malformed = [item for item in args.set if "=" not in item]
    if malformed:
        raise SystemExit(f"error: --set {malformed[0]!r}: expected key=value")
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    raw = raw_params(workdir, args.device, overrides, args)
    params = parse(raw)
    results: dict[str, Any] = {
        "command": "python benchmarks/segment_gpu.py " + " ".join(sys.argv[1:]),
        "minutes_budget": args.minutes,
        "machine": machine(args.device),
        "data": str(args.data),
        "overrides": overrides,
        "model": params.segment.model.model_dump(mode="json"),
        "train_settings": params.segment.train.model_dump(mode="json", include=RECORDED_TRAIN_SETTINGS)
        | {"train_seed": params.training_seed},
        "seconds": {},
    }
    out = Path(args.results)

    def save() -> None:
        results["seconds"]["total"] = time.perf_counter() - started
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_finite(results), indent=2, sort_keys=True, default=str) + "\n")

    phase = time.perf_counter()
    ingest(Path(args.data), params.data.category, params.paths.data_dir / "mvtec")
    results["seconds"]["ingest"] = time.perf_counter() - phase
    phase = time.perf_counter()
    counts = prepare_datasets(params)
    results["seconds"]["prepare"] = time.perf_counter() - phase
    results["split"] = {k.split("/")[1]: v for k, v in counts.items() if k.startswith("segment/") and k.count("/") == 1}
    save()

    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        results["train"] = {"checkpoint": str(checkpoint), "skipped": "--checkpoint given"}
    else:
        budget = (deadline - time.perf_counter()) / 60.0 - args.reserve_minutes
        if budget < MIN_TRAIN_MINUTES:
            raise SystemExit(
                f"error: {budget:.2f} min left for training after ingest/prepare and the {args.reserve_minutes:g} min "
                "reserve: raise --minutes or lower --reserve-minutes"
            )
        ceiling = raw["segment"]["train"].get("max_minutes")  # the overlay's (or --set) guard, if tighter
        raw["segment"]["train"]["max_minutes"] = round(min(budget, ceiling or budget), 3)
        params = parse(raw)
        print(f"[train] ChangeNet-Segmentation, {budget:.2f} min wall-clock budget", flush=True)
        results["train"] = train(params, workdir)
        results["seconds"]["train"] = results["train"]["seconds"]
        checkpoint = Path(results["train"]["checkpoint"])
        save()

    phase = time.perf_counter()
    print(f"[evaluate] {checkpoint} on val", flush=True)
    results["val"] = evaluate(params, checkpoint, args.device)
    results["seconds"]["evaluate"] = time.perf_counter() - phase
    save()

    if not args.timing:
        return results
    phase = time.perf_counter()
    bench = params.benchmark
    results["benchmark"] = {
        "batch_sizes": list(sizes),
        "warmup_seconds": bench.warmup_seconds,
        "duration_seconds": bench.duration_seconds,
        "min_iterations": bench.min_iterations,
        "image_size": params.data.image_size,
        "variants": [],
    }
    results["benchmark"]["variants"] = time_variants(params, checkpoint, variants, sizes, deadline, workdir, save=save)
    results["seconds"]["benchmark"] = time.perf_counter() - phase
    save()
    return results


# ---------------------------------------------------------------------------- RESULTS.md


def _cell(row: dict[str, Any], batch: int, key: str, spec: str) -> str:
    for record in row.get("results", []):
        if record["batch_size"] == batch and record.get(key) is not None:
            return format(record[key], spec)
    return "–"


KINDS = ("bent_lead", "cut_lead", "damaged_case", "misplaced")


def recipe_name(results: dict[str, Any]) -> str:
    """What a run changed on ``params.yaml`` + the overlay: its ``--set`` overrides, budget keys left out."""
    keys = ("segment.train.num_workers",)
    overrides = {k: v for k, v in (results.get("overrides") or {}).items() if k not in keys}
    if not overrides:
        return "overlay as is"
    return ", ".join(
        f"`{k.removeprefix('segment.')}={json.dumps(v, separators=(',', ':'))}`" for k, v in overrides.items()
    )


def _curve(train: dict[str, Any], every: int = 4) -> str:
    """Val IoU per epoch, every ``every``-th epoch and the last: where collapses would show."""
    curve = train.get("val_curve") or []
    if not curve:
        return ""
    shown = [point for i, point in enumerate(curve) if i % every == 0 or i == len(curve) - 1]
    return " ".join(f"{100 * point.get('val/iou', 0):.0f}" for point in shown)


def _training_rows(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| recipe | decoder embed / full-res width | epochs (of) | stopped by | train s | train pairs/s "
        "| val IoU | P / R | image AUROC (max / smooth_max) | IoU bent / cut / damaged / misplaced |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for results in runs:
        model, train, val = results.get("model", {}), results.get("train", {}), results.get("val", {})
        if "epochs" not in train:
            continue
        width = model.get("upsample_dim")
        kinds = " / ".join(pct(val.get(f"iou/{kind}"), 1) for kind in KINDS)
        lines.append(
            f"| {recipe_name(results)} | {model.get('embed_dim')} / {model.get('embed_dim') if width is None else width} "
            f"| {train['epochs']} ({train.get('max_epochs', '–')}) | {train.get('stopped_by', '–')} "
            f"| {train.get('seconds', 0):.0f} | {train.get('samples_per_second', 0):.1f} | **{pct(val.get('iou'))}** "
            f"| {pct(val.get('precision'), 1)} / {pct(val.get('recall'), 1)} "
            f"| {pct(val.get('image_auroc/max', val.get('image_auroc')), 1)} / {pct(val.get('image_auroc/smooth_max'), 1)} "
            f"| {kinds} |"
        )
    curves = [(recipe_name(r), _curve(r.get("train", {}))) for r in runs]
    curves = [(name, curve) for name, curve in curves if curve]
    if curves:
        lines += ["", "Val IoU (weight average where there is one) every 4th epoch and the last:", ""]
        lines += [f"- {name}: {curve}" for name, curve in curves]
    return lines


def _timing_rows(results: dict[str, Any]) -> list[str]:
    bench = results.get("benchmark", {"batch_sizes": [], "variants": []})
    sizes = bench["batch_sizes"]
    rows = [row for row in bench["variants"] if row["status"] != "skipped"]
    if not rows:  # nothing this run measured or found missing
        return []
    head = " | ".join(f"b{b} pairs/s | b{b} median ms" for b in sizes)
    lines = [
        "",
        f"Inference of {recipe_name(results)}, "
        f"{bench.get('image_size')}² pairs, inputs resident on the device, warm-up {bench['warmup_seconds']:g} s "
        f"then ≥ {bench['duration_seconds']:g} s and ≥ {bench['min_iterations']} calls per batch size; compile and "
        "first calls are outside the numbers (prepare s).",
        "",
        f"| runtime | {head} | prepare s | status |",
        "|---|" + "---|" * (2 * len(sizes) + 2),
    ]
    for row in rows:
        cells = " | ".join(
            f"{_cell(row, b, 'pairs_per_second', '.1f')} | {_cell(row, b, 'latency_median_ms', '.2f')}" for b in sizes
        )
        prepared = [r["prepare_seconds"] for r in row.get("results", []) if r.get("prepare_seconds") is not None]
        prepare = f"{sum(prepared):.1f}" if prepared else "–"
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row['message'][:160]}"
        status = status.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['variant']} | {cells} | {prepare} | {status} |")
    return lines


def render_markdown(runs: dict[str, Any] | list[dict[str, Any]]) -> str:
    """The RESULTS.md section from one run or several (recipes side by side, then a timing run).

    A table row per trained recipe (val metrics, per-kind IoU, the val curve), then a timing table
    per run that timed runtime variants.
    """
    runs = [runs] if isinstance(runs, dict) else list(runs)
    info = runs[0]["machine"]
    lines = [
        MARK_BEGIN,
        "## ChangeNet-Segmentation on a GPU (`benchmarks/segment_gpu.py`)",
        "",
        f"On {info['device_name']} ({info['cpu_count']} CPU cores), torch {info['torch']}"
        + (f", CUDA {info['cuda']}" if info.get("cuda") else "")
        + f"; data `{runs[0]['data']}`, split {runs[0].get('split')}. Params: `params.yaml` + "
        f"`infra/params/gpu-retrain.yaml` + each recipe's overrides; {len(runs)} run(s), each one's command, "
        "machine and every metric in its JSON.",
        "",
    ]
    lines += _training_rows(runs)
    for results in runs:
        lines += _timing_rows(results)
    lines.append(MARK_END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole run's budget (default 8)")
    parser.add_argument(
        "--reserve-minutes",
        type=float,
        default=3.5,
        help="of --minutes, kept for evaluation and timing (default 3.5)",
    )
    parser.add_argument("--data", type=Path, default=default_data(), help="MVTec AD transistor folder or archive")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/inspectops-segment-gpu"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--set", action="append", default=[], help="param override, e.g. segment.model.embed_dim=128")
    parser.add_argument("--batch-sizes", default="32,1", help="timed batch sizes (default 32,1)")
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        help="a runtime variant to time, e.g. 'pytorch cuda fp16 channels-last compile' (repeat; default: all)",
    )
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--bench-seconds", type=float, default=2.0, help="timed seconds per batch size")
    parser.add_argument("--min-iterations", type=int, default=10)
    parser.add_argument("--checkpoint", type=Path, help="time this checkpoint instead of training one")
    parser.add_argument(
        "--no-timing",
        dest="timing",
        action="store_false",
        help="train and evaluate only (e.g. recipes trained side by side; time the chosen one with --checkpoint)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS_JSON)
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD, help="where the section goes")
    parser.add_argument("--no-results-md", dest="write_md", action="store_false")
    parser.add_argument(
        "--render-only",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only write the section from results JSONs (several: recipes side by side, then the timing run)",
    )
    args = parser.parse_args()
    if args.render_only:
        results = [json.loads(path.read_text()) for path in args.render_only]
    else:
        from components.benchmarking.runtimes import RuntimeUnavailable
        from components.benchmarking.variants import VariantError
        from components.config import ParamsError

        try:
            results = run(args)
        except (RuntimeUnavailable, VariantError, ParamsError) as error:
            raise SystemExit(f"error: {error}") from None
    section = render_markdown(results)
    if args.write_md:
        update_results_md(section, MARK_BEGIN, MARK_END, path=args.results_md)
    print(section)


if __name__ == "__main__":
    main()
