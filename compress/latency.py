"""Latency samples → the row's latency columns: percentiles, a bootstrap interval of the median (moving-block:
timings come in correlated runs), and the speedup over the reference timed in the same session (with its
interval)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
CHUNK = 1_000_000  # bootstrap values drawn at once: 8 MB


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def block_length(n: int) -> int:
    """Length of the runs a moving-block bootstrap resamples: ~n^(1/3) (Künsch 1989; Hall, Horowitz & Jing 1995)."""
    return max(1, round(n ** (1 / 3)))


def bootstrap_medians(samples: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Medians of `resamples` moving-block bootstrap resamples of `samples`, in the order they were timed.

    Consecutive timings share machine state (caches, clock frequency, other load), so they are not
    independent: each resample joins runs of `block_length(n)` consecutive samples drawn with replacement,
    which keeps that correlation (an i.i.d. bootstrap gives intervals that are too narrow). Drawn in
    chunks of at most CHUNK values: a host benchmark of a fast model records tens of thousands of samples."""
    values = np.asarray(samples, dtype=float)
    n, length = len(values), block_length(len(values))
    runs, rng = -(-n // length), np.random.default_rng(seed)
    rows = max(1, CHUNK // n)
    medians = []
    for start in range(0, resamples, rows):
        firsts = rng.integers(0, n - length + 1, size=(min(rows, resamples - start), runs))
        index = (firsts[:, :, None] + np.arange(length)).reshape(len(firsts), -1)[:, :n]
        medians.append(np.median(values[index], axis=1))
    return np.concatenate(medians)


def interval(estimates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` percentile interval of bootstrap estimates."""
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(estimates, [tail, 100 - tail])
    return float(lo), float(hi)


def latency_columns(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/mean/std/min of per-iteration latencies, the number of samples, and the median's 95% interval."""
    if not samples_ms:
        raise ValueError("no latency samples")
    ordered = sorted(samples_ms)
    lo, hi = interval(bootstrap_medians(samples_ms))  # in timing order: the bootstrap resamples runs
    return {
        "latency_ms_p50": percentile(ordered, 50), "latency_ms_p50_lo": lo, "latency_ms_p50_hi": hi,
        "latency_ms_p90": percentile(ordered, 90), "latency_ms_mean": statistics.fmean(ordered),
        "latency_ms_std": statistics.pstdev(ordered), "latency_ms_min": ordered[0], "iters": len(ordered),
    }  # fmt: skip


def speedup_columns(reference_ms: Sequence[float], samples_ms: Sequence[float]) -> dict[str, float]:
    """Reference p50 ÷ variant p50 (both timed in one session) and the 95% interval of that ratio, from
    independent moving-block bootstrap resamples of the two sample sets (each in timing order)."""
    ref, var = bootstrap_medians(reference_ms, seed=1), bootstrap_medians(samples_ms, seed=2)
    lo, hi = interval(ref / var)
    reference_p50 = statistics.median(reference_ms)
    return {"ref_latency_ms_p50": reference_p50, "speedup_x": reference_p50 / statistics.median(samples_ms),
            "speedup_x_lo": lo, "speedup_x_hi": hi}  # fmt: skip
