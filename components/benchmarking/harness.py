"""A trtexec-like timing loop for any runtime: warm up, time iterations, report what trtexec reports.

trtexec is the reference tool for the TAO model card's FPS numbers, so the CPU and PyTorch
numbers we put next to them must mean the same thing: one *iteration* (trtexec's "query")
is one inference of a whole batch; throughput in qps is iterations / total host walltime,
pairs per second is ``batch * qps``, and the latency statistics are per batch, in ms, with
trtexec's own definitions of median and percentile (see :func:`percentile`).

Everything here is pure: the workload is a callable and the clock is injectable, so the
statistics are tested exactly on a fake workload.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

PERCENTILES: tuple[int, ...] = (90, 95, 99)
"""The percentiles trtexec prints by default (``--percentile=90,95,99``)."""


class BenchmarkError(ValueError):
    """Settings or measurements that cannot give a meaningful benchmark."""


def median(sorted_values: Sequence[float]) -> float:
    """Middle value, or the mean of the two middle values for an even count (as trtexec)."""
    if not sorted_values:
        raise BenchmarkError("median of no values")
    middle = len(sorted_values) // 2
    if len(sorted_values) % 2:
        return float(sorted_values[middle])
    return (float(sorted_values[middle - 1]) + float(sorted_values[middle])) / 2.0


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """trtexec's percentile: drop the ``floor((100 - pct)% of n)`` largest values, return the largest left.

    So p90 of 10 values is the 9th smallest and p99 of 10 values is the largest. The count
    is computed with exact fractions: in binary floating point ``(1 - 0.9) * 10`` is just
    below 1 and would drop nothing.
    """
    if not sorted_values:
        raise BenchmarkError("percentile of no values")
    if not 0.0 <= pct <= 100.0:
        raise BenchmarkError(f"percentile must be in [0, 100], got {pct}")
    count = len(sorted_values)
    exclude = math.floor((100 - Fraction(str(pct))) * count / 100)
    return float(sorted_values[max(count - 1 - exclude, 0)])


@dataclass(frozen=True)
class LatencyStats:
    """Per-iteration (per-batch) latency in milliseconds."""

    min_ms: float
    max_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float


def latency_stats(latencies_ms: Sequence[float]) -> LatencyStats:
    """min / max / mean / median / p90 / p95 / p99 of a list of latencies (any order)."""
    if not latencies_ms:
        raise BenchmarkError("no timed iterations: cannot compute latency statistics")
    ordered = sorted(float(value) for value in latencies_ms)
    return LatencyStats(
        min_ms=ordered[0],
        max_ms=ordered[-1],
        mean_ms=math.fsum(ordered) / len(ordered),
        median_ms=median(ordered),
        p90_ms=percentile(ordered, 90),
        p95_ms=percentile(ordered, 95),
        p99_ms=percentile(ordered, 99),
    )


@dataclass(frozen=True)
class BenchmarkResult:
    """One batch size's measurement, in trtexec's vocabulary."""

    batch_size: int
    iterations: int
    total_seconds: float
    """Host walltime from the start of the first timed iteration to the end of the last."""
    latency: LatencyStats
    warmup_seconds: float
    """Requested warm-up time."""
    warmup_iterations: int
    duration_seconds: float
    """Requested minimum timing duration."""
    min_iterations: int

    @property
    def qps(self) -> float:
        """Iterations (batches) per second, trtexec's ``Throughput: ... qps``."""
        return self.iterations / self.total_seconds

    @property
    def pairs_per_second(self) -> float:
        """Image pairs per second: the FPS the TAO model card reports."""
        return self.batch_size * self.qps

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready record (latencies as ``latency_<stat>_ms``)."""
        record: dict[str, Any] = {
            "batch_size": self.batch_size,
            "pairs_per_second": self.pairs_per_second,
            "qps": self.qps,
        }
        record.update({f"latency_{key}": value for key, value in asdict(self.latency).items()})
        record.update(
            {
                "iterations": self.iterations,
                "total_seconds": self.total_seconds,
                "warmup_seconds": self.warmup_seconds,
                "warmup_iterations": self.warmup_iterations,
                "duration_seconds": self.duration_seconds,
                "min_iterations": self.min_iterations,
            }
        )
        return record


def summarize(
    batch_size: int,
    latencies_ms: Sequence[float],
    total_seconds: float,
    warmup_seconds: float = 0.0,
    warmup_iterations: int = 0,
    duration_seconds: float = 0.0,
    min_iterations: int = 1,
) -> BenchmarkResult:
    """Build a :class:`BenchmarkResult` from raw timings (also used for external traces)."""
    if total_seconds <= 0:
        raise BenchmarkError(f"total time must be positive, got {total_seconds} s")
    return BenchmarkResult(
        batch_size=batch_size,
        iterations=len(latencies_ms),
        total_seconds=float(total_seconds),
        latency=latency_stats(latencies_ms),
        warmup_seconds=float(warmup_seconds),
        warmup_iterations=warmup_iterations,
        duration_seconds=float(duration_seconds),
        min_iterations=min_iterations,
    )


def benchmark(
    run_batch: Callable[[int], None],
    batch_size: int,
    warmup_seconds: float,
    duration_seconds: float,
    min_iterations: int,
    clock: Callable[[], float] = time.perf_counter,
) -> BenchmarkResult:
    """Time ``run_batch(batch_size)`` like trtexec times an engine.

    Warm-up calls run until ``warmup_seconds`` have passed (none when 0), then timed calls
    run until at least ``duration_seconds`` have passed *and* ``min_iterations`` were done
    (trtexec's ``--duration`` and ``--iterations``). ``run_batch`` must return only when the
    work is finished (synchronise a GPU stream inside it), or latencies would be enqueue times.

    Args:
        run_batch: runs one inference of ``batch_size`` inputs prepared beforehand.
        clock: seconds as a float; injectable so that tests control time.
    """
    if batch_size < 1:
        raise BenchmarkError(f"batch_size must be >= 1, got {batch_size}")
    if warmup_seconds < 0 or duration_seconds <= 0:
        raise BenchmarkError(
            f"need warmup_seconds >= 0 and duration_seconds > 0, got {warmup_seconds} and {duration_seconds}"
        )
    if min_iterations < 1:
        raise BenchmarkError(f"min_iterations must be >= 1, got {min_iterations}")

    warmup_iterations = 0
    if warmup_seconds > 0:
        warmup_end = clock() + warmup_seconds
        while True:
            run_batch(batch_size)
            warmup_iterations += 1
            if clock() >= warmup_end:
                break

    latencies_ms: list[float] = []
    started = clock()
    now = started
    while now - started < duration_seconds or len(latencies_ms) < min_iterations:
        before = clock()
        run_batch(batch_size)
        now = clock()
        latencies_ms.append((now - before) * 1000.0)
    return summarize(
        batch_size,
        latencies_ms,
        total_seconds=now - started,
        warmup_seconds=warmup_seconds,
        warmup_iterations=warmup_iterations,
        duration_seconds=duration_seconds,
        min_iterations=min_iterations,
    )
