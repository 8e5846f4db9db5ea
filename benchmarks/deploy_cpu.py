"""CPU deployment benchmark: throughput and val change-IoU of every serving path of one checkpoint.

Runs the export and quantize stages (all three backends) on a trained checkpoint, then times
PyTorch eager FP32, onnxruntime FP32, onnxruntime INT8 (the CPU U8S8 graph and the TensorRT
S8S8 Q/DQ graph), ModelOpt INT8 (Q/DQ, run by onnxruntime) and torchao int8 weight-only at
each batch size, and records pairs/s and median latency beside each model's val change-IoU in
``benchmarks/results/deploy_cpu.json`` and ``benchmarks/RESULTS.md``.

    python benchmarks/deploy_cpu.py                       # the transistor benchmark's checkpoint
    python benchmarks/deploy_cpu.py --checkpoint path/best.ckpt --datasets path/datasets

**Timing.** Each (runtime, batch) is timed in its own fresh process, one after another: on a
small machine a runtime's idle worker threads keep spinning for a while after each call
(OpenMP and onnxruntime both do), so timing two runtimes side by side in one process measures
their contention, not the runtimes. Each run warms up (``--warmup`` seconds, at least two
calls), then calls the model until both ``--min-iterations`` calls and ``--duration`` seconds
are reached; pairs/s is pairs over total timed seconds and latency the median call.
(``components/benchmarking/harness.py`` may replace this loop once it exists.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS_JSON = REPO / "benchmarks" / "results" / "deploy_cpu.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
MARK_BEGIN = "<!-- deploy_cpu:begin -->"
MARK_END = "<!-- deploy_cpu:end -->"
BENCH = Path("/tmp/inspectops-bench-transistor/artifacts-package")
DEFAULT_CHECKPOINT = BENCH / "models" / "segment" / "best.ckpt"
DEFAULT_DATASETS = BENCH / "datasets"

RUNTIMES: dict[str, dict[str, str]] = {
    "torch_fp32": {"label": "PyTorch eager FP32", "kind": "torch", "file": ""},
    "ort_fp32": {"label": "onnxruntime FP32", "kind": "onnx", "file": "segment_fp32.onnx"},
    "ort_int8_cpu": {"label": "onnxruntime INT8 U8S8 Q/DQ, CPU graph", "kind": "onnx", "file": "segment_int8_cpu.onnx"},
    "ort_int8_qdq": {
        "label": "onnxruntime INT8 S8S8 Q/DQ, TensorRT graph",
        "kind": "onnx",
        "file": "segment_int8_qdq.onnx",
    },
    "modelopt_int8": {
        "label": "ModelOpt INT8 Q/DQ (run by onnxruntime)",
        "kind": "onnx",
        "file": "segment_modelopt_int8.onnx",
    },
    "torchao_int8wo": {
        "label": "torchao int8 weight-only (eager)",
        "kind": "torchao",
        "file": "segment_torchao_int8wo.pt",
    },
}
QUANT_KEYS = {
    "ort_int8_cpu": "onnxruntime_cpu",
    "ort_int8_qdq": "onnxruntime",
    "modelopt_int8": "modelopt",
    "torchao_int8wo": "torchao",
}


# ---------------------------------------------------------------------------- one timing run


def _load_runner(kind: str, path: str, threads: int | None) -> Any:
    """``fn(test, golden)`` over numpy float32 arrays for one runtime (imports only what it needs)."""
    if kind == "onnx":
        from components.export.runtime import create_session

        session = create_session(path, threads=threads)
        return lambda t, g: session.run(None, {"input0": t, "input1": g})
    import torch

    if threads:
        torch.set_num_threads(threads)
    if kind == "torch":
        from components.models.changenet.module import load_module

        model = load_module(path).model.eval()
    else:
        from components.quantization.torchao_ptq import load_torchao_model

        model = load_torchao_model(path)

    def run(t: Any, g: Any) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(t), torch.from_numpy(g))

    return run


def time_runner(
    fn: Any, batch: int, size: int, warmup: float, duration: float, min_iterations: int
) -> dict[str, float]:
    """Warm up, then time calls of ``fn`` on a fixed random batch; pairs/s and latency statistics."""
    import numpy as np

    rng = np.random.default_rng(0)
    test = rng.random((batch, 3, size, size), dtype=np.float32)
    golden = rng.random((batch, 3, size, size), dtype=np.float32)
    started, calls = time.perf_counter(), 0
    while calls < 2 or time.perf_counter() - started < warmup:
        fn(test, golden)
        calls += 1
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_iterations or time.perf_counter() - started < duration:
        tick = time.perf_counter()
        fn(test, golden)
        times.append(time.perf_counter() - tick)
    ordered = sorted(times)
    return {
        "pairs_per_second": batch * len(times) / sum(times),
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000,
        "iterations": float(len(times)),
    }


def _measure_main(argv: list[str]) -> None:
    """Child process: ``--measure KIND PATH BATCH SIZE WARMUP DURATION MIN_ITER THREADS``; prints one JSON line."""
    kind, path, batch, size, warmup, duration, min_iter, threads = argv
    fn = _load_runner(kind, path, int(threads) or None)
    result = time_runner(fn, int(batch), int(size), float(warmup), float(duration), int(min_iter))
    print("RESULT " + json.dumps(result), flush=True)


def measure(kind: str, path: Path, batch: int, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Best of ``args.repeats`` fresh-process timings of one runtime at one batch size.

    Best, not mean: on a shared (virtual) machine a run can only be slowed down by others, so
    the fastest repeat is the closest to what the runtime itself does; all repeats are kept.
    """
    runs = []
    for _ in range(args.repeats):
        load = os.getloadavg()[0]  # other work on the machine slows every runtime: keep it beside the number
        runs.append({**_measure_once(kind, path, batch, size, args), "loadavg_1min": load})
    best = max(runs, key=lambda r: r["pairs_per_second"])
    return {
        **best,
        "repeats_pairs_per_second": [r["pairs_per_second"] for r in runs],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _measure_once(kind: str, path: Path, batch: int, size: int, args: argparse.Namespace) -> dict[str, float]:
    """Time one runtime at one batch size in a fresh process (see the module docstring)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        kind,
        str(path),
        str(batch),
        str(size),
        str(args.warmup),
        str(args.duration),
        str(args.min_iterations),
        str(args.threads or 0),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=args.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"timing {kind} {path} at batch {batch} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# ------------------------------------------------------------------------------ the benchmark


def prepare_workdir(workdir: Path, checkpoint: Path, datasets: Path) -> Any:
    """Params whose artifacts live in ``workdir`` (datasets linked, checkpoint copied)."""
    import yaml

    from components.config import load_params

    for path, what in ((checkpoint, "checkpoint"), (datasets / "segment" / "list" / "val.txt", "val split")):
        if not path.is_file():
            raise SystemExit(f"{path}: {what} not found")
    artifacts = workdir / "artifacts"
    (artifacts / "models" / "segment").mkdir(parents=True, exist_ok=True)
    link = artifacts / "datasets"
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(datasets.resolve(), target_is_directory=True)
    target = artifacts / "models" / "segment" / "best.ckpt"
    if not target.is_file() or target.stat().st_mtime < checkpoint.stat().st_mtime:
        shutil.copy2(checkpoint, target)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = {"data_dir": str(workdir / "data"), "artifacts_dir": str(artifacts)}
    raw["tracking"]["tracking_uri"] = f"sqlite:///{workdir / 'mlflow.db'}"
    raw["quantize"]["backends"] = ["onnxruntime", "modelopt", "torchao"]
    params_path = workdir / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(params_path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from components.export.runtime import OnnxSegmentModel
    from components.export.stage import deploy_dir, export_stage, quantize_stage
    from components.models.changenet.data import ChangeSegmentDataset
    from components.models.family import get_family
    from components.quantization.evaluate import evaluate_runner

    params = prepare_workdir(args.workdir, args.checkpoint, args.datasets)
    started = time.perf_counter()
    metrics_dir = params.metrics_dir
    export_file, quantize_file = metrics_dir / "segment_export.json", metrics_dir / "segment_quantize.json"
    if args.reuse_models and export_file.is_file() and quantize_file.is_file():
        export_metrics = json.loads(export_file.read_text())
        quantize_metrics = json.loads(quantize_file.read_text())
    else:
        export_metrics = export_stage(params, "segment")
        quantize_metrics = quantize_stage(params, "segment")
    stage_seconds = time.perf_counter() - started
    val = ChangeSegmentDataset(params.datasets_dir, "val", seed=params.seed)
    size = int(val[0]["test"].shape[-1])
    deploy = deploy_dir(params)
    iou = {"torch_fp32": quantize_metrics["quantize/fp32/val_iou"]}
    onnx_fp32 = OnnxSegmentModel(deploy / RUNTIMES["ort_fp32"]["file"])
    iou["ort_fp32"] = evaluate_runner(get_family("segment"), onnx_fp32, params)["iou"]
    for runtime, key in QUANT_KEYS.items():
        iou[runtime] = quantize_metrics.get(f"quantize/{key}/val_iou", float("nan"))

    load_before = os.getloadavg()
    timings: dict[str, dict[str, Any]] = {}
    for runtime in args.runtimes:
        spec = RUNTIMES[runtime]
        path = args.checkpoint if spec["kind"] == "torch" else deploy / spec["file"]
        timings[runtime] = {}
        for batch in args.batch_sizes:
            try:
                result = measure(spec["kind"], path, batch, size, args)
            except (RuntimeError, subprocess.TimeoutExpired) as error:  # keep the other runtimes' numbers
                print(f"{runtime} batch {batch}: FAILED {error}", flush=True)
                timings[runtime][str(batch)] = {"error": str(error)[-500:]}
                continue
            timings[runtime][str(batch)] = result
            print(
                f"{runtime:16s} batch {batch:3d}: {result['pairs_per_second']:7.2f} pairs/s, median {result['median_ms']:8.1f} ms",
                flush=True,
            )
    fp32 = iou["torch_fp32"]
    entries = {
        name: {
            "label": RUNTIMES[name]["label"],
            "val_iou": iou.get(name),
            "iou_drop_points": None if iou.get(name) is None else (fp32 - iou[name]) * 100,
            "batches": timings.get(name, {}),
        }
        for name in args.runtimes
    }
    if args.merge and RESULTS_JSON.is_file():  # keep earlier rows of the same checkpoint not timed now
        previous = json.loads(RESULTS_JSON.read_text())
        if previous.get("checkpoint") == str(args.checkpoint):
            for name, entry in previous.get("runtimes", {}).items():
                entries.setdefault(name, entry)
    entries = {name: entries[name] for name in RUNTIMES if name in entries}
    results = {
        "checkpoint": str(args.checkpoint),
        "datasets": str(args.datasets),
        "val_pairs": len(val),
        "image_size": size,
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before_timing": list(load_before),
            "loadavg_after_timing": list(os.getloadavg()),
        },
        "versions": _versions(),
        "timing": {
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "min_iterations": args.min_iterations,
            "repeats": args.repeats,
            "threads": args.threads or "all cores",
        },
        "export": export_metrics,
        "quantize": quantize_metrics,
        "stage_seconds": stage_seconds,
        "runtimes": entries,
    }
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    update_results_md(render_markdown(results, args.batch_sizes))
    return results


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "onnxruntime", "onnx", "nvidia-modelopt", "torchao", "timm"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "missing"
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def render_markdown(results: dict[str, Any], batch_sizes: list[int]) -> str:
    """The RESULTS.md section: pairs/s and latency per batch beside val change-IoU and speed-up."""
    runtimes = results["runtimes"]
    base = runtimes.get("torch_fp32", {}).get("batches", {})
    head = " | ".join(f"b{b} pairs/s (x eager) | b{b} median ms" for b in batch_sizes) + " | load at timing"
    lines = [
        MARK_BEGIN,
        "## CPU deployment paths (ChangeNet-Segmentation)",
        "",
        f"Checkpoint `{results['checkpoint']}`, val {results['val_pairs']} pairs at {results['image_size']}x{results['image_size']}; "
        f"{results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"load average before timing {', '.join(f'{x:.2f}' for x in results['machine']['loadavg_before_timing'])}. "
        "Each runtime timed alone in a fresh process (warm-up, then >= "
        f"{results['timing']['min_iterations']} calls and {results['timing']['duration_s']} s), "
        f"best of {results['timing']['repeats']} such processes. "
        "IoU: val change-IoU at threshold 0.5; drop in points vs PyTorch FP32. "
        "Load: highest 1-minute load average just before the row's timings; the previous timing run itself "
        "leaves up to ~2 on a 2-core machine, so only values well above 2 mean other work shared the cores. "
        "Short (batch-1) calls vary most between runs on a small shared VM: every repeat is in "
        "`benchmarks/results/deploy_cpu.json` (`repeats_pairs_per_second`). "
        "Written by `benchmarks/deploy_cpu.py`.",
        "",
        f"| runtime | val IoU | IoU drop (pts) | {head} |",
        "|---|---|---|" + "---|---|" * len(batch_sizes) + "---|",
    ]
    for entry in runtimes.values():
        cells = []
        for batch in batch_sizes:
            timing = entry["batches"].get(str(batch))
            if timing is None or "error" in timing:
                cells += ["n/a", "n/a"]
                continue
            reference = base.get(str(batch), {}).get("pairs_per_second")
            speedup = f" ({timing['pairs_per_second'] / reference:.1f}x)" if reference else ""
            cells += [f"{timing['pairs_per_second']:.2f}{speedup}", f"{timing['median_ms']:.1f}"]
        loads = [t.get("loadavg_1min") for t in entry["batches"].values() if t.get("loadavg_1min") is not None]
        cells.append(f"{max(loads):.1f}" if loads else "n/a")
        iou = entry["val_iou"]
        lines.append(
            f"| {entry['label']} | {_fmt(None if iou is None else iou * 100)} | {_fmt(entry['iou_drop_points'])} | "
            + " | ".join(cells)
            + " |"
        )
    quantize = results["quantize"]
    flags = ", ".join(
        f"{key} {'within' if quantize.get(f'quantize/{key}/within_tolerance') == 1.0 else 'OUTSIDE'}"
        for key in ("onnxruntime_cpu", "onnxruntime", "modelopt", "torchao")
        if f"quantize/{key}/within_tolerance" in quantize
    )
    lines += [
        "",
        f"Export parity (8 val pairs): max |logit diff| {results['export']['export/parity_max_abs_logit']:.2g}, "
        f"equal mask pixels {results['export']['export/parity_equal_pixels']:.5f}. IoU tolerance: {flags}.",
        MARK_END,
        "",
    ]
    return "\n".join(lines)


def update_results_md(section: str) -> None:
    """Replace only this script's marked section of RESULTS.md (other sections belong to other scripts)."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS_MD.write_text(text)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        _measure_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/inspectops-deploy-cpu"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--min-iterations", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads for every runtime (default: all cores)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="fresh-process timings per runtime and batch (best kept)"
    )
    parser.add_argument("--reuse-models", action="store_true", help="keep the workdir's exported/quantized models")
    parser.add_argument("--render-only", action="store_true", help="rewrite the RESULTS.md section from the JSON")
    parser.add_argument(
        "--merge", action="store_true", help="keep rows of runtimes not timed now from the last results"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per timing process")
    args = parser.parse_args()
    if args.render_only:
        results = json.loads(RESULTS_JSON.read_text())
        update_results_md(render_markdown(results, args.batch_sizes))
        return
    run(args)


if __name__ == "__main__":
    main()
