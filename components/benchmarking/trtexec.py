"""Drive NVIDIA's ``trtexec``: find it, learn its version, build the right command, parse what it prints.

trtexec is how TAO measured the model card's FPS, so on GPUs and Jetsons it is our
preferred benchmark tool. Two versions matter and they differ in ways that change the
numbers (see ``shared/STACK_NOTES.md``):

* TensorRT 10 (JetPack 6 stays there): weakly typed by default, precision from
  ``--fp16/--int8/--best``; inference loop copies data and has no CUDA graph unless told,
  so we pass ``--noDataTransfers --useCudaGraph --separateProfileRun`` to match 11.
* TensorRT 11: strongly typed only, the precision flags are gone (precision comes from the
  ONNX: an FP16 graph, or Q/DQ nodes for INT8/FP8), CUDA graphs and no transfers by default.

Version detection assumption: trtexec prints its banner line
``&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # ...`` *before* parsing arguments
(``reportTestStart`` comes first in its ``main``), so ``trtexec --help`` shows it too. The
number is ``major*10000 + minor*100 + patch`` for TensorRT >= 10 (v100300 = 10.3.0,
v101303 = 10.13.3) and ``major*1000 + minor*100 + patch`` before (v8601 = 8.6.1). A run
log also has ``TensorRT version: 10.3.0``; either is accepted.

Parsing follows trtexec's ``sampleReporting.cpp``: the ``=== Performance summary ===``
block and the ``--exportTimes`` JSON, a list of per-iteration records (warm-up excluded)
with ``startEnqMs, endEnqMs, startH2dMs, endH2dMs, startComputeMs, endComputeMs,
startD2hMs, endD2hMs, h2dMs, computeMs, d2hMs, latencyMs`` (older builds add
``endToEndMs``); times in ms from the start of inference. There is no ``enqueueMs`` key:
the enqueue time is ``endEnqMs - startEnqMs``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from components.benchmarking.harness import BenchmarkResult, summarize

JETSON_TRTEXEC = Path("/usr/src/tensorrt/bin/trtexec")
"""Where JetPack installs trtexec (it is not on PATH there)."""

INPUT_NAMES: tuple[str, str] = ("input0", "input1")
"""ChangeNet's ONNX inputs (TAO export): test image and golden image."""

TRT10_PERF_FLAGS: tuple[str, ...] = ("--noDataTransfers", "--useCudaGraph", "--separateProfileRun")
"""What TensorRT 10's trtexec needs to measure like TensorRT 11 does by default."""

TRT10_PRECISION_FLAGS: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "fp16": ("--fp16",),
    "bf16": ("--bf16",),
    "int8": ("--int8",),  # with a Q/DQ ONNX: explicit quantization, no calibration needed
    "fp8": ("--fp8",),
    "best": ("--best",),
    "onnx": ("--stronglyTyped",),  # take the precision from the ONNX, as TensorRT 11 always does
}

_LOG_PREFIX = re.compile(r"^\[\d{2}/\d{2}/\d{4}-\d{2}:\d{2}:\d{2}\] \[[A-Z]\] ")
_BANNER = re.compile(r"\[TensorRT v(\d+)\]")
_VERSION_LINE = re.compile(r"TensorRT version: (\d+)\.(\d+)\.(\d+)")
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)"
_STAT = re.compile(rf"(min|max|mean|median|percentile\(({_NUMBER})%\)) = ({_NUMBER}) ms")
_PROLOG = re.compile(rf"Timing trace has (\d+) queries over ({_NUMBER}) s")
_WARMUP = re.compile(rf"Warmup completed (\d+) queries over ({_NUMBER}) ms")

EXPORT_TIMES_KEYS: tuple[str, ...] = (
    "startEnqMs",
    "endEnqMs",
    "startH2dMs",
    "endH2dMs",
    "startComputeMs",
    "endComputeMs",
    "startD2hMs",
    "endD2hMs",
    "h2dMs",
    "computeMs",
    "d2hMs",
    "latencyMs",
)


class TrtexecNotFound(RuntimeError):
    """No trtexec on this machine; the message lists every place that was tried."""


class TrtexecError(RuntimeError):
    """trtexec ran but failed; the message carries the end of its log."""


class TrtexecParseError(ValueError):
    """A log or ``--exportTimes`` file that does not have the expected trtexec format."""


class TrtVersion(NamedTuple):
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


# ---------------------------------------------------------------------------- locate and version


def find_trtexec(
    hint: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] | None = None,
) -> Path:
    """``$TRTEXEC``, then ``PATH``, then ``hint`` (a platform's path), then JetPack's location.

    Raises :class:`TrtexecNotFound` naming every place looked in; nothing is recorded then.
    """
    env = os.environ if env is None else env
    which = which or shutil.which
    looked: list[str] = []
    explicit = env.get("TRTEXEC")
    if explicit:
        if _is_executable(Path(explicit)):
            return Path(explicit)
        looked.append(f"$TRTEXEC={explicit} (not an executable file)")
    else:
        looked.append("$TRTEXEC (unset)")
    on_path = which("trtexec")
    if on_path:
        return Path(on_path)
    looked.append("PATH")
    for candidate in dict.fromkeys(Path(p) for p in (hint, JETSON_TRTEXEC) if p is not None):
        if _is_executable(candidate):
            return candidate
        looked.append(str(candidate))
    raise TrtexecNotFound(f"trtexec not found (looked in {', '.join(looked)})")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def parse_version_code(code: str | int) -> TrtVersion:
    """``100300`` -> 10.3.0, ``101303`` -> 10.13.3, ``110000`` -> 11.0.0, ``8601`` -> 8.6.1."""
    number = int(code)
    if number >= 100000:
        return TrtVersion(number // 10000, (number // 100) % 100, number % 100)
    return TrtVersion(number // 1000, (number // 100) % 10, number % 100)


def parse_trtexec_version(text: str) -> TrtVersion:
    """The TensorRT version from a trtexec banner (``[TensorRT v100300]``) or ``TensorRT version: x.y.z``."""
    banner = _BANNER.search(text)
    if banner:
        return parse_version_code(banner.group(1))
    line = _VERSION_LINE.search(text)
    if line:
        return TrtVersion(*(int(part) for part in line.groups()))
    raise TrtexecParseError("no TensorRT version in trtexec output (expected '[TensorRT vNNNNNN]' banner)")


def detect_version(trtexec: Path | str, timeout: float = 120.0) -> TrtVersion:
    """Run ``trtexec --help`` and read the version from its banner."""
    try:
        completed = subprocess.run(
            [str(trtexec), "--help"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise TrtexecError(f"could not run {trtexec} --help: {error}") from None
    return parse_trtexec_version(completed.stdout + "\n" + completed.stderr)


# ---------------------------------------------------------------------------- command


@dataclass(frozen=True)
class TrtexecSettings:
    """One build-and-measure run at one batch size; the engine allows batches 1..max_batch_size."""

    onnx: Path
    engine: Path
    batch_size: int
    max_batch_size: int
    image_size: int
    precision: str = "fp16"
    warmup_seconds: float = 1.0
    duration_seconds: float = 5.0
    min_iterations: int = 10
    export_times: Path | None = None
    timing_cache: Path | None = None
    workspace_mib: int | None = None
    input_names: tuple[str, ...] = INPUT_NAMES
    extra_args: tuple[str, ...] = field(default_factory=tuple)


def _shapes(names: Sequence[str], batch: int, size: int) -> str:
    return ",".join(f"{name}:{batch}x3x{size}x{size}" for name in names)


def _num(value: float) -> str:
    return f"{value:g}"


def precision_flags(version: TrtVersion, precision: str) -> tuple[str, ...]:
    """trtexec precision flags: TensorRT 10 maps the name to a flag; 11 has none (the ONNX decides)."""
    if version.major >= 11:
        return ()
    if version.major < 10:
        raise TrtexecError(f"TensorRT {version} is not supported (need 10.x or 11.x)")
    try:
        return TRT10_PRECISION_FLAGS[precision]
    except KeyError:
        raise TrtexecError(f"unknown precision {precision!r}; choose from {sorted(TRT10_PRECISION_FLAGS)}") from None


def build_command(trtexec: Path | str, version: TrtVersion, settings: TrtexecSettings) -> list[str]:
    """The trtexec argument list that builds ``settings.onnx`` and times it at ``settings.batch_size``.

    Dynamic batch: ``--minShapes`` at 1, ``--optShapes`` at the measured batch, ``--maxShapes``
    at the largest batch; ``--shapes`` picks the measured batch explicitly.
    """
    s = settings
    if not 1 <= s.batch_size <= s.max_batch_size:
        raise TrtexecError(f"batch {s.batch_size} outside the engine's range 1..{s.max_batch_size}")
    command = [
        str(trtexec),
        f"--onnx={s.onnx}",
        f"--saveEngine={s.engine}",
        f"--minShapes={_shapes(s.input_names, 1, s.image_size)}",
        f"--optShapes={_shapes(s.input_names, s.batch_size, s.image_size)}",
        f"--maxShapes={_shapes(s.input_names, s.max_batch_size, s.image_size)}",
        f"--shapes={_shapes(s.input_names, s.batch_size, s.image_size)}",
        *precision_flags(version, s.precision),
    ]
    if version.major == 10:
        command += TRT10_PERF_FLAGS
    command += [
        f"--warmUp={_num(s.warmup_seconds * 1000.0)}",
        f"--duration={_num(s.duration_seconds)}",
        f"--iterations={s.min_iterations}",
    ]
    if s.export_times is not None:
        command.append(f"--exportTimes={s.export_times}")
    if s.timing_cache is not None:
        command.append(f"--timingCacheFile={s.timing_cache}")
    if s.workspace_mib is not None:
        command.append(f"--memPoolSize=workspace:{s.workspace_mib}")
    command += s.extra_args
    return command


# ---------------------------------------------------------------------------- parse


@dataclass(frozen=True)
class TimingStats:
    """One ``<Name>: min = ... ms, ...`` line of the performance summary, in ms."""

    min: float
    max: float
    mean: float
    median: float
    percentiles: dict[float, float]

    def percentile(self, pct: float) -> float:
        try:
            return self.percentiles[float(pct)]
        except KeyError:
            raise TrtexecParseError(
                f"percentile {pct}% not in the summary (has {sorted(self.percentiles)}); pass --percentile"
            ) from None


@dataclass(frozen=True)
class TrtexecSummary:
    """The parsed ``=== Performance summary ===`` block (and its prolog)."""

    throughput_qps: float
    timings: dict[str, TimingStats]
    """Keyed by the log's names: ``Latency``, ``Enqueue Time``, ``H2D Latency``, ``GPU Compute Time``, ..."""
    total_host_walltime_s: float
    total_gpu_compute_s: float
    queries: int | None = None
    warmup_queries: int | None = None
    version: TrtVersion | None = None

    @property
    def latency(self) -> TimingStats:
        return self.timings["Latency"]

    @property
    def gpu_compute(self) -> TimingStats:
        return self.timings["GPU Compute Time"]


def _strip(line: str) -> str:
    return _LOG_PREFIX.sub("", line.rstrip("\n")).strip()


def _stats(body: str, name: str) -> TimingStats:
    values: dict[str, float] = {}
    percentiles: dict[float, float] = {}
    for match in _STAT.finditer(body):
        key, pct, value = match.group(1), match.group(2), float(match.group(3))
        if pct is not None:
            percentiles[float(pct)] = value
        else:
            values[key] = value
    missing = [key for key in ("min", "max", "mean", "median") if key not in values]
    if missing:
        raise TrtexecParseError(f"summary line {name!r} lacks {missing}: {body!r}")
    return TimingStats(values["min"], values["max"], values["mean"], values["median"], percentiles)


def parse_summary(log: str) -> TrtexecSummary:
    """Parse trtexec's console output; raises :class:`TrtexecParseError` without a full summary."""
    lines = [_strip(line) for line in log.splitlines()]
    try:
        start = lines.index("=== Performance summary ===")
    except ValueError:
        raise TrtexecParseError("no '=== Performance summary ===' block in the trtexec log") from None
    throughput: float | None = None
    walltime: float | None = None
    gpu_total: float | None = None
    timings: dict[str, TimingStats] = {}
    for line in lines[start + 1 :]:
        if not line or line.startswith("==="):
            break
        name, _, body = line.partition(": ")
        if name == "Throughput":
            throughput = float(body.split()[0])
        elif name == "Total Host Walltime":
            walltime = float(body.split()[0])
        elif name == "Total GPU Compute Time":
            gpu_total = float(body.split()[0])
        elif body.startswith("min = "):
            timings[name] = _stats(body, name)
    if throughput is None or walltime is None or gpu_total is None or "Latency" not in timings:
        raise TrtexecParseError(
            "incomplete performance summary: need Throughput, Latency, Total Host Walltime and Total GPU Compute Time"
        )
    queries = warmups = None
    for line in lines[:start]:
        if match := _PROLOG.search(line):
            queries = int(match.group(1))
        elif match := _WARMUP.search(line):
            warmups = int(match.group(1))
    try:
        version: TrtVersion | None = parse_trtexec_version(log)
    except TrtexecParseError:
        version = None
    return TrtexecSummary(throughput, timings, walltime, gpu_total, queries, warmups, version)


@dataclass(frozen=True)
class IterationTimes:
    """One record of ``--exportTimes`` (ms since inference started)."""

    start_enq_ms: float
    end_enq_ms: float
    start_h2d_ms: float
    end_h2d_ms: float
    start_compute_ms: float
    end_compute_ms: float
    start_d2h_ms: float
    end_d2h_ms: float
    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    latency_ms: float

    @property
    def enqueue_ms(self) -> float:
        return self.end_enq_ms - self.start_enq_ms


def parse_export_times(source: Path | str) -> list[IterationTimes]:
    """Read a ``--exportTimes`` file (a path) or its text."""
    text = Path(source).read_text() if isinstance(source, Path) else source
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise TrtexecParseError(f"--exportTimes output is not JSON: {error}") from None
    if not isinstance(raw, list) or not raw:
        raise TrtexecParseError("--exportTimes output must be a non-empty list of per-iteration records")
    records = []
    for index, item in enumerate(raw):
        missing = [key for key in EXPORT_TIMES_KEYS if not isinstance(item, dict) or key not in item]
        if missing:
            raise TrtexecParseError(f"--exportTimes record {index} lacks {missing}")
        records.append(IterationTimes(*(float(item[key]) for key in EXPORT_TIMES_KEYS)))
    return records


def summarize_export_times(
    records: Sequence[IterationTimes], batch_size: int, warmup_seconds: float = 0.0, duration_seconds: float = 0.0
) -> BenchmarkResult:
    """Per-iteration times -> the harness's result, with trtexec's walltime (first H2D start to last D2H end)."""
    if not records:
        raise TrtexecParseError("no iterations in --exportTimes")
    walltime_ms = records[-1].end_d2h_ms - records[0].start_h2d_ms
    return summarize(
        batch_size,
        [record.latency_ms for record in records],
        total_seconds=walltime_ms / 1000.0,
        warmup_seconds=warmup_seconds,
        duration_seconds=duration_seconds,
    )


def summary_record(summary: TrtexecSummary, batch_size: int) -> dict[str, Any]:
    """A benchmark record in the same keys as :meth:`BenchmarkResult.to_dict`, from trtexec's own numbers.

    trtexec's "queries" are inferences of a whole (explicit) batch, so pairs/s = batch * qps.
    """
    latency = summary.latency
    record: dict[str, Any] = {
        "batch_size": batch_size,
        "pairs_per_second": batch_size * summary.throughput_qps,
        "qps": summary.throughput_qps,
        "latency_min_ms": latency.min,
        "latency_max_ms": latency.max,
        "latency_mean_ms": latency.mean,
        "latency_median_ms": latency.median,
        "latency_p90_ms": latency.percentile(90),
        "latency_p95_ms": latency.percentile(95),
        "latency_p99_ms": latency.percentile(99),
        "iterations": summary.queries,
        "total_seconds": summary.total_host_walltime_s,
        "total_gpu_compute_seconds": summary.total_gpu_compute_s,
    }
    if "GPU Compute Time" in summary.timings:
        record["gpu_compute_median_ms"] = summary.gpu_compute.median
    if summary.version is not None:
        record["tensorrt_version"] = str(summary.version)
    return record


# ---------------------------------------------------------------------------- run


def run_trtexec(command: Sequence[str], log_path: Path, timeout: float | None = None) -> str:
    """Run trtexec, save its combined output to ``log_path`` and return it; fail with the log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        completed = subprocess.run(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        output = error.stdout if isinstance(error.stdout, str) else ""
        log_path.write_text(output)
        raise TrtexecError(f"trtexec timed out after {timeout} s; log in {log_path}") from None
    except OSError as error:
        raise TrtexecError(f"could not start {command[0]}: {error}") from None
    log_path.write_text(completed.stdout)
    if completed.returncode != 0 or "&&&& FAILED" in completed.stdout:
        tail = "\n".join(completed.stdout.splitlines()[-25:])
        raise TrtexecError(f"trtexec failed (exit {completed.returncode}); log in {log_path}; last lines:\n{tail}")
    return completed.stdout


def benchmark_with_trtexec(
    onnx: Path,
    work_dir: Path,
    batch_sizes: Sequence[int],
    image_size: int,
    precision: str,
    warmup_seconds: float,
    duration_seconds: float,
    min_iterations: int = 10,
    trtexec: Path | None = None,
    hint: Path | None = None,
    workspace_mib: int | None = None,
    timeout: float | None = 3600.0,
    version: TrtVersion | None = None,
) -> list[dict[str, Any]]:
    """Build and time one engine per batch size (shared timing cache); one record per batch.

    Each record holds trtexec's own summary numbers; where ``--exportTimes`` was written,
    its per-iteration data is re-summarised as a cross-check (``export_pairs_per_second``).
    """
    exe = trtexec or find_trtexec(hint)
    version = version or detect_version(exe)
    work_dir.mkdir(parents=True, exist_ok=True)
    max_batch = max(batch_sizes)
    records = []
    for batch in batch_sizes:
        settings = TrtexecSettings(
            onnx=onnx,
            engine=work_dir / f"engine-b{batch}.plan",
            batch_size=batch,
            max_batch_size=max_batch,
            image_size=image_size,
            precision=precision,
            warmup_seconds=warmup_seconds,
            duration_seconds=duration_seconds,
            min_iterations=min_iterations,
            export_times=work_dir / f"times-b{batch}.json",
            timing_cache=work_dir / "timing.cache",
            workspace_mib=workspace_mib,
        )
        log = run_trtexec(build_command(exe, version, settings), work_dir / f"trtexec-b{batch}.log", timeout)
        record = summary_record(parse_summary(log), batch)
        if not _finite(record):
            raise TrtexecError(f"trtexec reported non-finite timings at batch {batch}; log in {work_dir}")
        record.update({"warmup_seconds": warmup_seconds, "duration_seconds": duration_seconds, "tool": "trtexec"})
        record.setdefault("tensorrt_version", str(version))
        if settings.export_times is not None and settings.export_times.is_file():
            exported = summarize_export_times(parse_export_times(settings.export_times), batch)
            record["export_pairs_per_second"] = exported.pairs_per_second
        records.append(record)
    return records


def _finite(record: Mapping[str, Any]) -> bool:
    """False when trtexec printed ``inf``/``nan`` (e.g. zero timed iterations)."""
    return all(math.isfinite(v) for v in record.values() if isinstance(v, float))
