"""The pipeline's benchmark stage: this machine's platform, measured for real, beside the reference table.

It times the exported FP32 and quantized INT8 ONNX models with the trtexec-like harness
on ``benchmark.platform`` (``cpu`` here: onnxruntime), and writes the comparison with
the TAO card's per-platform FPS: platforms that are not this machine appear with their
reference numbers and "run the benchmark-fanout flow" as their status. The table goes
to ``<artifacts>/benchmarks/comparison.md`` (published as a Prefect artifact by the flow)
and to an MLflow run (``log_table``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.benchmarking.bench import benchmarks_dir, log_comparison, run_benchmark
from components.benchmarking.compare import OK, PlatformOutcome, build_rows, rows_to_markdown
from components.benchmarking.platforms import load_platforms
from components.config import Params
from components.fsutil import atomic_file, write_json
from components.tracking import tree_hash

NOT_HERE = "not run by this pipeline: use the benchmark-fanout flow on its work pool"
BENCHMARKED_FAMILY = "segment"
"""The family TAO's per-platform reference table describes (Visual ChangeNet-Segmentation). The
harness feeds (test, golden) inputs at the exported shapes, so both ChangeNet families are timed
(``benchmark_segment``, ``benchmark_classify``); the one-input MAL is not. The reference FPS of
other platforms belong to the segmentation model: another family's table shows them for scale."""


def deploy_models(params: Params, family: str = BENCHMARKED_FAMILY) -> dict[str, Path]:
    """The exported models of ``family`` to time, by precision label, that exist now."""
    from components.export.stage import deploy_path

    candidates = {
        "fp32": deploy_path(params, family, "fp32.onnx"),
        "int8": deploy_path(params, family, "int8_qdq.onnx"),  # symmetric QDQ, the TensorRT-ready model
        "int8-cpu": deploy_path(params, family, "int8_cpu.onnx"),  # the variant tuned for x86 onnxruntime
    }
    # Another family's labels name it, so its reports and metrics never overwrite segmentation's.
    prefix = "" if family == BENCHMARKED_FAMILY else f"{family}-"
    return {f"{prefix}{label}": path for label, path in candidates.items() if path.is_file()}


def registered_version(params: Params, family: str = BENCHMARKED_FAMILY) -> str | None:
    from components.registry import decision_path

    decision = decision_path(params, family)
    return str(json.loads(decision.read_text())["version"]) if decision.is_file() else None


def comparison_path(params: Params, family: str = BENCHMARKED_FAMILY) -> Path:
    """``<reports>/benchmarks/comparison.md`` for segmentation, ``comparison_<family>.md`` otherwise."""
    suffix = "" if family == BENCHMARKED_FAMILY else f"_{family}"
    return benchmarks_dir(params) / f"comparison{suffix}.md"


def measured_path(params: Params, family: str = BENCHMARKED_FAMILY) -> Path:
    """``<artifacts>/benchmarks/measured.json`` (``measured_<family>.json``): the benchmark stage's DVC output.

    What was timed (platform, runtime, models by content hash, batch sizes), never the times:
    deterministic, so the committed ``dvc.lock`` matches it, and missing on a fresh clone, so
    DVC measures each new machine once (the times go to MLflow and the reports).
    """
    suffix = "" if family == BENCHMARKED_FAMILY else f"_{family}"
    return params.paths.artifacts_dir / "benchmarks" / f"measured{suffix}.json"


def benchmark_stage(params: Params, family: str = BENCHMARKED_FAMILY) -> dict[str, float]:
    """Time each deployable model of ``family`` here and write the comparison table (file, MLflow)."""
    models = deploy_models(params, family)
    if not models:
        raise FileNotFoundError(f"{params.paths.artifacts_dir / 'deploy'}: no exported model to benchmark (run export)")
    registry = load_platforms()
    here = registry.get(params.benchmark.platform)
    version = registered_version(params, family)
    metrics: dict[str, float] = {}
    outcomes: dict[str, PlatformOutcome] = {}
    records_by_precision: dict[str, list[dict[str, Any]]] = {}
    for label, path in models.items():
        records = run_benchmark(params, path, here.runtime, precision=label, model_version=version, platform=here.name)
        records_by_precision[label] = records
        for record in records:
            batch = int(record["batch_size"])
            metrics[f"bench/{here.name}/{label}/b{batch}/pairs_per_second"] = float(record["pairs_per_second"])
            metrics[f"bench/{here.name}/{label}/b{batch}/latency_median_ms"] = float(record["latency_median_ms"])
    # The comparison row for this machine uses the fastest deployable precision.
    best = max(records_by_precision, key=lambda k: max(r["pairs_per_second"] for r in records_by_precision[k]))
    outcomes[here.name] = PlatformOutcome(
        here.name, OK, f"{best} ONNX, {here.runtime}", tuple(records_by_precision[best])
    )
    for platform in registry.platforms.values():
        if platform.name != here.name:
            outcomes[platform.name] = PlatformOutcome(platform.name, "not run", NOT_HERE)
    rows = build_rows(list(registry.platforms.values()), outcomes)
    model_uri = str(models[best])
    run_id = log_comparison(
        params, rows, fanout_id=f"pipeline-{version or 'local'}", model_uri=model_uri, model_version=version
    )
    note = f"Measured here: `{here.name}` ({here.runtime}, {best}). Model version {version or 'unregistered'}; MLflow run `{run_id}`."
    if family != BENCHMARKED_FAMILY:
        note = f"{family}: {note} Reference FPS are TAO's for ChangeNet-Segmentation, shown for scale."
    with atomic_file(comparison_path(params, family)) as handle:
        handle.write(rows_to_markdown(rows, note=note))
    write_json(
        measured_path(params, family),
        {
            "platform": here.name,
            "runtime": here.runtime,
            "models": {label: tree_hash(path) for label, path in models.items()},
            "batch_sizes": sorted({int(r["batch_size"]) for rs in records_by_precision.values() for r in rs}),
        },
    )
    return metrics
