"""Latency samples → the row's latency columns."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize_ms(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, mean, std and min of per-iteration latencies in milliseconds."""
    if not samples_ms:
        raise ValueError("no latency samples")
    ordered = sorted(samples_ms)
    return {
        "latency_ms_p50": percentile(ordered, 50),
        "latency_ms_p90": percentile(ordered, 90),
        "latency_ms_mean": statistics.fmean(ordered),
        "latency_ms_std": statistics.pstdev(ordered),
        "latency_ms_min": ordered[0],
        "iters": len(ordered),
    }
