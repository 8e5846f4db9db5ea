"""Benchmark entry points: one model on this machine (CLI), one platform (flow child), and recording.

* :func:`run_benchmark` - ``inspectops benchmark --model PATH --runtime ... --device ... --batch-sizes ...``:
  load the model for one runtime variant (:mod:`components.benchmarking.variants`), time each
  batch size with the harness (:func:`measure`), write JSON and log one MLflow run.
* :func:`measure` - the timing alone, recording nothing: what ``benchmarks/segment_gpu.py``
  calls on a GPU box that has no MLflow.
* :func:`benchmark_platform` - the body of the ``benchmark-platform`` flow: resolve the
  model (registry URI or path), and on a TensorRT platform build and time engines with
  trtexec (preferred: it is how TAO measured) or the TensorRT Python API; record the same way.
* :func:`collect_fanout_results` / :func:`log_comparison` - the fan-out parent reads the
  children's MLflow runs (MLflow is the store every platform can reach) and logs the table.

Every record says what produced it: ``runtime`` (the runtime's name), ``variant`` (its label,
e.g. ``pytorch cuda fp16 channels-last compile``), ``precision`` and ``device`` (the device's
name, e.g. ``NVIDIA H200``). Nothing is recorded for a platform that cannot run: the error
propagates with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from components.benchmarking.compare import (
    OK,
    ComparisonRow,
    PlatformOutcome,
    build_rows,
    comparison_metrics,
    rows_to_markdown,
    rows_to_table,
)
from components.benchmarking.harness import benchmark
from components.benchmarking.platforms import Platform, PlatformError, PlatformRegistry, load_platforms
from components.benchmarking.runtimes import RUNTIMES, RuntimeUnavailable
from components.benchmarking.variants import RuntimeVariant
from components.config import Params
from components.fsutil import write_json

METRIC_KEYS: tuple[str, ...] = (
    "pairs_per_second",
    "qps",
    "latency_min_ms",
    "latency_mean_ms",
    "latency_median_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "iterations",
)
"""Logged per batch size as ``bench/b<N>/<key>``."""

_METRIC = re.compile(r"^bench/b(\d+)/(.+)$")


class BenchmarkSetupError(ValueError):
    """Arguments that cannot make a benchmark (unknown runtime, empty batch list, ...)."""


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,8,16,32"`` -> (1, 8, 16, 32), for the CLI's ``--batch-sizes``."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BenchmarkSetupError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise BenchmarkSetupError(f"--batch-sizes needs at least one size >= 1, got {text!r}")
    return sizes


def default_model_uri(params: Params) -> str:
    """The registry's ``champion`` of ``tracking.registered_model``: what platforms benchmark by default."""
    from components.registry import CHAMPION

    return f"models:/{params.tracking.registered_model}@{CHAMPION}"


def platform_batch_sizes(params: Params, platform: Platform | None) -> tuple[int, ...]:
    """``benchmark.batch_sizes`` plus the platform's reference batch (TAO's number), sorted.

    The comparison with TAO needs its batch size measured; the other platforms (the CPU
    here) need not pay for a large batch nobody compares against.
    """
    sizes = set(params.benchmark.batch_sizes)
    if platform is not None and platform.reference is not None:
        sizes.add(platform.reference.batch_size)
    return tuple(sorted(sizes))


def benchmarks_dir(params: Params) -> Path:
    """Timings differ on every run, so they live among the reports, outside DVC's outputs."""
    return params.reports_dir / "benchmarks"


def results_path(
    params: Params, platform: str, runtime: str, precision: str, variant: RuntimeVariant | None = None
) -> Path:
    """``<artifacts>/reports/benchmarks/<platform>-<variant slug>.json``.

    The slug of a runtime on its usual device is ``<runtime>-<precision>``; others name the
    device and options too (``pytorch-cuda-fp16-channels-last-compile``), so variants never
    overwrite each other's reports.
    """
    slug = variant.slug if variant is not None else f"{runtime}-{precision}"
    return benchmarks_dir(params) / f"{platform}-{slug}.json"


def default_precision(runtime: str, model_path: Path, platform: Platform | None) -> str:
    """The label to record: ONNX Runtime -> what the ONNX carries; TensorRT -> the platform's; PyTorch -> fp32."""
    if runtime == "onnxruntime" and model_path.suffix == ".onnx":
        from components.benchmarking.tensorrt_build import detect_onnx_precision

        return detect_onnx_precision(model_path)
    if runtime == "tensorrt":
        return platform.precision if platform is not None else "fp16"
    return "fp32"


def _known_platform(name: str, registry: PlatformRegistry | None) -> Platform | None:
    try:
        return (registry or load_platforms()).get(name)
    except PlatformError:
        return None


def as_variant(runtime: str | RuntimeVariant, precision: str | None = None) -> RuntimeVariant:
    """A runtime name (on its usual device) or a variant, with ``precision`` filled in when given.

    Raises :class:`BenchmarkSetupError` for an unknown runtime name or a precision that
    contradicts the variant's.
    """
    if isinstance(runtime, str):
        if runtime not in RUNTIMES:
            raise BenchmarkSetupError(f"unknown runtime {runtime!r}; choose from {list(RUNTIMES)}")
        return RuntimeVariant(runtime, precision=precision)
    if precision is not None and runtime.precision is not None and precision != runtime.precision:
        raise BenchmarkSetupError(f"precision {precision!r} contradicts the variant {runtime.label!r}")
    return runtime.with_precision(precision) if precision is not None else runtime


def recorded_platform(params: Params, variant: RuntimeVariant, platform: str | None = None) -> str:
    """The platform a number is filed under: ``platform``, else ``benchmark.platform`` when it is this kind of device.

    A CUDA measurement is never filed under a CPU platform (nor the reverse): with the default
    ``benchmark.platform: cpu``, ``--device cuda`` records under ``local-cuda``; set
    ``benchmark.platform`` (e.g. ``-S benchmark.platform=h100``) to file it under a known GPU.
    """
    if platform:
        return platform
    name = params.benchmark.platform
    known = _known_platform(name, None)
    if known is not None and (known.kind == "cpu") != (variant.device == "cpu"):
        return f"local-{variant.device}"
    return name


# ---------------------------------------------------------------------------- recording


def record_results(
    params: Params,
    records: list[dict[str, Any]],
    *,
    platform: str,
    runtime: str,
    precision: str,
    model_uri: str,
    model_version: str | None,
    tool: str,
    extra_tags: Mapping[str, str] | None = None,
    extra_files: Sequence[Path] = (),
    variant: RuntimeVariant | None = None,
    device: str | None = None,
) -> str:
    """Write the JSON and log one MLflow run (metrics ``bench/b<N>/...``); returns the run id.

    ``variant`` (its label) and ``device`` (the device's name) go into the JSON and the run's
    tags, so the comparison table can say what each number came from.
    """
    import mlflow

    from components.tracking import log_metrics, mlflow_run

    batch_sizes = ",".join(str(record["batch_size"]) for record in records)
    label = variant.label if variant is not None else f"{runtime} {precision}"
    device = device or next((str(r["device"]) for r in records if r.get("device")), "")
    payload = {
        "platform": platform,
        "runtime": runtime,
        "variant": label,
        "precision": precision,
        "device": device,
        "tool": tool,
        "model": model_uri,
        "model_version": model_version,
        "results": records,
    }
    path = results_path(params, platform, runtime, precision, variant)
    write_json(path, payload)
    tags = {
        "kind": "benchmark",
        "platform": platform,
        "runtime": runtime,
        "variant": label,
        "precision": precision,
        "device": device,
        "batch_sizes": batch_sizes,
        "model_version": model_version or "unversioned",
        "model_uri": model_uri,
        "tool": tool,
        **(extra_tags or {}),
    }
    with mlflow_run(params, run_name=f"benchmark-{path.stem}", tags=tags) as run:
        bench = params.benchmark
        mlflow.log_params(
            {
                "benchmark.warmup_seconds": bench.warmup_seconds,
                "benchmark.duration_seconds": bench.duration_seconds,
                "benchmark.min_iterations": bench.min_iterations,
                "benchmark.threads": bench.threads,
            }
        )
        metrics = {
            f"bench/b{record['batch_size']}/{key}": record[key]
            for record in records
            for key in METRIC_KEYS
            if record.get(key) is not None
        }
        log_metrics(metrics)
        mlflow.log_artifact(str(path), artifact_path="benchmark")
        for extra in extra_files:
            if extra.is_file():
                mlflow.log_artifact(str(extra), artifact_path="benchmark/logs")
        return run.info.run_id


# ---------------------------------------------------------------------------- one model, this machine


def _time_model(
    params: Params, variant: RuntimeVariant, model_path: Path, batch_sizes: Sequence[int]
) -> list[dict[str, Any]]:
    """Load once, then per batch size: prepare (compile, first calls; timed apart), warm up, time."""
    import time

    from components.benchmarking.runtimes import load_runtime

    bench = params.benchmark
    size = params.data.tiling.tile_size if params.data.tiling is not None else params.data.image_size  # model input
    loaded = load_runtime(variant, model_path, size, bench.threads, seed=params.seed)
    records = []
    try:
        for batch in batch_sizes:
            prepare_seconds = None
            if loaded.prepare is not None:
                started = time.perf_counter()
                loaded.prepare(batch)
                prepare_seconds = time.perf_counter() - started
            record = benchmark(
                loaded.run_batch, batch, bench.warmup_seconds, bench.duration_seconds, bench.min_iterations
            ).to_dict()
            record.update(
                {
                    "runtime": variant.runtime,
                    "variant": variant.label,
                    "precision": variant.precision,
                    "device": loaded.device,
                    "prepare_seconds": prepare_seconds,
                    "runtime_details": loaded.details,
                }
            )
            records.append(record)
        return records
    finally:
        loaded.close()


def measure(
    params: Params,
    model_path: Path | str,
    variant: RuntimeVariant,
    batch_sizes: Sequence[int],
    work_dir: Path | None = None,
    opt_batch: int | None = None,
) -> list[dict[str, Any]]:
    """Time ``model_path`` as ``variant`` here for each batch size; records only, nothing written.

    TensorRT given an ONNX builds a dynamic-batch engine in ``work_dir`` first. Each record is
    the harness's (:meth:`~components.benchmarking.harness.BenchmarkResult.to_dict`) plus
    ``runtime``, ``variant``, ``precision``, ``device``, ``prepare_seconds`` (compile and first
    calls, outside the numbers) and ``runtime_details`` (providers, threads, the torch steps).
    ``params.benchmark`` sets warm-up, duration and minimum iterations.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BenchmarkSetupError(f"{model_path}: model file not found")
    sizes = tuple(batch_sizes)
    if not sizes or min(sizes) < 1:
        raise BenchmarkSetupError(f"batch sizes must be >= 1, got {list(sizes)}")
    if variant.precision is None:
        variant = variant.with_precision(default_precision(variant.runtime, model_path, None))
    timed = model_path
    if variant.runtime == "tensorrt" and model_path.suffix == ".onnx":
        from components.benchmarking.runtimes import check_available

        check_available(variant)  # before spending minutes on an engine build
        engine_dir = work_dir or benchmarks_dir(params) / "engines"
        timed = _engine_from_onnx(params, model_path, engine_dir, sizes, str(variant.precision), opt_batch)
    return _time_model(params, variant, timed, sizes)


def _engine_from_onnx(
    params: Params, onnx: Path, work_dir: Path, batch_sizes: Sequence[int], precision: str, opt_batch: int | None
) -> Path:
    """Build a dynamic-batch engine with the TensorRT Python API (timing cache kept in ``work_dir``)."""
    from components.benchmarking.tensorrt_build import build_engine, onnx_image_size

    engine = work_dir / f"{onnx.stem}-{precision}.plan"
    max_batch = max(batch_sizes)
    build_engine(
        onnx,
        engine,
        image_size=onnx_image_size(onnx, params.data.image_size),
        max_batch=max_batch,
        opt_batch=opt_batch if opt_batch and opt_batch <= max_batch else max_batch,
        precision=precision,
        timing_cache=work_dir / "timing.cache",
    )
    return engine


def run_benchmark(
    params: Params,
    model_path: Path | str,
    runtime: str | RuntimeVariant,
    batch_sizes: Sequence[int] | None = None,
    precision: str | None = None,
    model_version: str | None = None,
    platform: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Time ``model_path`` as ``runtime`` here for each batch size; write JSON, log MLflow; return the records.

    ``runtime`` is a name (that runtime on its usual device: pytorch and onnxruntime on the
    CPU, tensorrt on the GPU) or a :class:`~components.benchmarking.variants.RuntimeVariant`
    (``inspectops benchmark --device cuda --precision fp16 --compile``). ``tensorrt`` accepts
    an engine (``.plan``/``.engine``) or an ONNX, which is built first. ``precision`` is what
    PyTorch computes in (fp32, bf16, fp16), a label for ONNX Runtime (the graph decides; read
    from it by default) and the build precision for TensorRT. On a machine without the
    runtime or device this raises :class:`RuntimeUnavailable` and records nothing.
    """
    variant = as_variant(runtime, precision)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BenchmarkSetupError(f"{model_path}: model file not found")
    platform = recorded_platform(params, variant, platform)
    known = _known_platform(platform, None)
    sizes = tuple(batch_sizes or platform_batch_sizes(params, known))
    if variant.precision is None:
        variant = variant.with_precision(default_precision(variant.runtime, model_path, known))
    opt = known.reference.batch_size if known and known.reference else None
    records = measure(params, model_path, variant, sizes, benchmarks_dir(params) / platform, opt)
    for record in records:
        record.update({"platform": platform, "tool": "harness", "model_version": model_version})
    record_results(
        params,
        records,
        platform=platform,
        runtime=variant.runtime,
        precision=str(variant.precision),
        model_uri=str(model_path),
        model_version=model_version,
        tool="harness",
        extra_tags=extra_tags,
        variant=variant,
    )
    return records


# ---------------------------------------------------------------------------- one platform (flow child)


def platform_variant(platform: Platform) -> RuntimeVariant:
    """What a platform runs: its runtime and precision, on the GPU unless it is a CPU platform."""
    device = "cpu" if platform.kind == "cpu" else "cuda"
    precision = platform.precision if platform.runtime == "tensorrt" else None
    return RuntimeVariant(platform.runtime, device=device, precision=precision)


def _gpu_name(fallback: str) -> str:
    """This machine's GPU as torch names it (trtexec does not say), else ``fallback``."""
    try:
        import torch

        return str(torch.cuda.get_device_name()) if torch.cuda.is_available() else fallback
    except Exception:  # no torch, or a driver problem: the platform's name is the best we know
        return fallback


def _benchmark_tensorrt_platform(
    params: Params, platform: Platform, onnx: Path, work_dir: Path
) -> tuple[list[dict[str, Any]], str, list[Path]]:
    """trtexec when installed, else the TensorRT Python API; (records, tool, log files)."""
    from components.benchmarking import trtexec as tx

    bench = params.benchmark
    sizes = platform_batch_sizes(params, platform)
    if onnx.suffix != ".onnx":
        raise BenchmarkSetupError(f"{onnx}: a TensorRT platform builds its own engine and needs the ONNX")
    try:
        exe = tx.find_trtexec(platform.trtexec_path)
    except tx.TrtexecNotFound as not_found:
        from components.benchmarking.tensorrt_build import import_tensorrt

        try:
            import_tensorrt()
        except RuntimeUnavailable as unavailable:
            raise RuntimeUnavailable(f"{unavailable} Also {not_found}.") from None
        opt = platform.reference.batch_size if platform.reference else None
        engine = _engine_from_onnx(params, onnx, work_dir, sizes, platform.precision, opt)
        return _time_model(params, platform_variant(platform), engine, sizes), "tensorrt-python", []

    from components.benchmarking.tensorrt_build import detect_onnx_precision, onnx_image_size, plan_build

    version = tx.detect_version(exe)
    plan_build(version.major, platform.precision, detect_onnx_precision(onnx))  # fail early on a precision mismatch
    records = tx.benchmark_with_trtexec(
        onnx,
        work_dir,
        sizes,
        onnx_image_size(onnx, params.data.image_size),
        platform.precision,
        bench.warmup_seconds,
        bench.duration_seconds,
        bench.min_iterations,
        trtexec=exe,
        version=version,
    )
    return records, "trtexec", sorted(work_dir.glob("trtexec-b*.log"))


def benchmark_platform(
    params: Params,
    platform_name: str,
    model_uri: str,
    model_version: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
    registry: PlatformRegistry | None = None,
) -> dict[str, Any]:
    """Benchmark the model on the platform this runs on; returns a summary (records and MLflow run id).

    ``model_uri``: ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/...`` or a
    local path; empty means the registry's champion (:func:`default_model_uri`).
    """
    from components.benchmarking.model_ref import resolve_model

    platform = (registry or load_platforms()).get(platform_name)
    model_uri = model_uri or default_model_uri(params)
    work_dir = benchmarks_dir(params) / platform.name
    model = resolve_model(params, model_uri, platform.runtime, work_dir / "model", model_version)
    version = model.version or model_version

    variant = platform_variant(platform)
    if variant.precision is None:
        variant = variant.with_precision(default_precision(platform.runtime, model.path, platform))
    precision = str(variant.precision)
    if platform.runtime == "tensorrt":
        records, tool, logs = _benchmark_tensorrt_platform(params, platform, model.path, work_dir)
    else:
        records, tool, logs = (
            _time_model(params, variant, model.path, platform_batch_sizes(params, platform)),
            "harness",
            [],
        )
    device = next((str(r["device"]) for r in records if r.get("device")), "") or _gpu_name(platform.display_name)
    for record in records:
        record.update(
            {
                "platform": platform.name,
                "runtime": platform.runtime,
                "variant": variant.label,
                "precision": precision,
                "device": record.get("device") or device,
                "tool": tool,
            }
        )
        record["model_version"] = version
    run_id = record_results(
        params,
        records,
        platform=platform.name,
        runtime=platform.runtime,
        precision=precision,
        model_uri=model_uri,
        model_version=version,
        tool=tool,
        extra_tags=extra_tags,
        extra_files=logs,
        variant=variant,
        device=device,
    )
    return {
        "platform": platform.name,
        "runtime": platform.runtime,
        "variant": variant.label,
        "device": device,
        "precision": precision,
        "tool": tool,
        "model_uri": model_uri,
        "model_version": version,
        "mlflow_run_id": run_id,
        "results": records,
    }


# ---------------------------------------------------------------------------- fan-out parent


def records_from_metrics(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """Rebuild per-batch records from a run's ``bench/b<N>/<key>`` metrics."""
    by_batch: dict[int, dict[str, Any]] = {}
    for name, value in metrics.items():
        match = _METRIC.match(name)
        if match:
            batch = int(match.group(1))
            by_batch.setdefault(batch, {"batch_size": batch})[match.group(2)] = value
    return [by_batch[batch] for batch in sorted(by_batch)]


def collect_fanout_results(params: Params, fanout_id: str) -> dict[str, list[dict[str, Any]]]:
    """The records each platform's child logged under ``fanout_id`` (latest run per platform).

    Each record carries its run's ``runtime``, ``variant``, ``precision`` and ``device`` tags.
    """
    import mlflow

    from components.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(params))
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    if experiment is None:
        return {}
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.fanout_id = '{fanout_id}' and tags.kind = 'benchmark'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for run in runs:  # later runs of the same platform (retries) win
        tags = run.data.tags
        what = {key: tags[key] for key in ("runtime", "variant", "precision", "device") if tags.get(key)}
        results[tags["platform"]] = [{**record, **what} for record in records_from_metrics(run.data.metrics)]
    return results


def log_comparison(
    params: Params,
    rows: Sequence[ComparisonRow],
    fanout_id: str,
    model_uri: str,
    model_version: str | None,
) -> str:
    """One MLflow run with the comparison table (``log_table``), its Markdown and flat metrics."""
    import mlflow

    from components.tracking import log_metrics, mlflow_run

    tags = {
        "kind": "benchmark-comparison",
        "fanout_id": fanout_id,
        "model_uri": model_uri,
        "model_version": model_version or "unversioned",
        "platforms": ",".join(dict.fromkeys(row.platform for row in rows)),
    }
    with mlflow_run(params, run_name="benchmark-comparison", tags=tags) as run:
        mlflow.log_table(data=rows_to_table(rows), artifact_file="benchmark_comparison.json")
        mlflow.log_text(rows_to_markdown(rows, note=f"Model `{model_uri}`"), "benchmark_comparison.md")
        log_metrics(comparison_metrics(rows))
        return run.info.run_id


@dataclass(frozen=True)
class FanoutReport:
    rows: list[ComparisonRow]
    outcomes: dict[str, PlatformOutcome]
    mlflow_run_id: str
    markdown: str
    table: dict[str, list[Any]]

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome in self.outcomes.items() if outcome.status != OK]


def compare_fanout(
    params: Params,
    platform_names: Sequence[str],
    outcomes: Mapping[str, PlatformOutcome],
    fanout_id: str,
    model_uri: str,
    model_version: str | None,
    registry: PlatformRegistry | None = None,
) -> FanoutReport:
    """Join the children's final states with their MLflow results, build and log the comparison."""
    platforms = (registry or load_platforms()).select(list(platform_names))
    measured = collect_fanout_results(params, fanout_id)
    merged: dict[str, PlatformOutcome] = {}
    for platform in platforms:
        outcome = outcomes.get(platform.name) or PlatformOutcome(platform.name, "missing", "no child run was started")
        if outcome.status == OK:
            results = measured.get(platform.name, [])
            message = outcome.message or ("" if results else f"child completed but logged no results for {fanout_id}")
            outcome = replace(outcome, results=tuple(results), message=message)
        merged[platform.name] = outcome
    rows = build_rows(platforms, merged)
    run_id = log_comparison(params, rows, fanout_id, model_uri, model_version)
    note = f"Model `{model_uri}` (version {model_version or 'unversioned'}); MLflow run `{run_id}`."
    return FanoutReport(rows, merged, run_id, rows_to_markdown(rows, note=note), rows_to_table(rows))
