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


def round_picks(rounds: int, resamples: int = RESAMPLES, seed: int = 3) -> np.ndarray:
    """Which rounds each bootstrap resample takes (rounds drawn with replacement), one row per resample."""
    return np.random.default_rng(seed).integers(0, rounds, size=(resamples, rounds))


def bootstrap_medians(
    samples: Sequence[float],
    round_sizes: Sequence[int] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    picks: np.ndarray | None = None,
) -> np.ndarray:
    """Medians of `resamples` bootstrap resamples of `samples` (in the order they were timed, in rounds of
    `round_sizes`; one round when None).

    Two levels, as the timing was done: the rounds (separate processes, each with its own memory layout and
    machine state) are drawn with replacement (`picks`, shared by two files timed in the same rounds), and within
    each drawn round consecutive timings, which share machine state (caches, clock frequency, other load) and are
    not independent, are resampled in runs of `block_length(n)` (a moving-block bootstrap; an i.i.d. one gives
    intervals that are too narrow). With one round only the second level remains. Drawn in chunks of at most
    CHUNK values: a host benchmark of a fast model records tens of thousands of samples."""
    values = np.asarray(samples, dtype=float)
    sizes = list(round_sizes or [len(values)])
    if sum(sizes) != len(values):
        raise ValueError(f"rounds of {sizes} samples do not add up to {len(values)}")
    firsts = np.cumsum([0, *sizes[:-1]])
    if len(sizes) == 1:
        picks = np.zeros((resamples, 1), dtype=int)
    elif picks is None:
        picks = round_picks(len(sizes), resamples)
    rng, width, ragged = np.random.default_rng(seed), max(sizes), len(set(sizes)) > 1
    rows = max(1, CHUNK // (width * len(sizes)))
    medians = []
    for start in range(0, resamples, rows):
        chunk = picks[start : start + rows]
        drawn = np.full((len(chunk), len(sizes), width), np.nan)
        for slot in range(len(sizes)):
            for r, n in enumerate(sizes):
                chosen = np.flatnonzero(chunk[:, slot] == r)
                if not len(chosen):
                    continue
                length = block_length(n)
                runs = -(-n // length)
                block_starts = rng.integers(0, n - length + 1, size=(len(chosen), runs))
                index = (block_starts[:, :, None] + np.arange(length)).reshape(len(chosen), -1)[:, :n]
                drawn[chosen, slot, :n] = values[firsts[r] + index]
        flat = drawn.reshape(len(chunk), -1)
        medians.append(np.nanmedian(flat, axis=1) if ragged else np.median(flat, axis=1))
    return np.concatenate(medians)


def interval(estimates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` percentile interval of bootstrap estimates."""
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(estimates, [tail, 100 - tail])
    return float(lo), float(hi)


def latency_columns(samples_ms: Sequence[float], round_sizes: Sequence[int] | None = None) -> dict[str, float]:
    """p50/p90/mean/std/min of per-iteration latencies, the number of samples, and the median's 95% interval."""
    if not samples_ms:
        raise ValueError("no latency samples")
    ordered = sorted(samples_ms)
    lo, hi = interval(bootstrap_medians(samples_ms, round_sizes))  # in timing order: the bootstrap resamples runs
    return {
        "latency_ms_p50": percentile(ordered, 50), "latency_ms_p50_lo": lo, "latency_ms_p50_hi": hi,
        "latency_ms_p90": percentile(ordered, 90), "latency_ms_mean": statistics.fmean(ordered),
        "latency_ms_std": statistics.pstdev(ordered), "latency_ms_min": ordered[0], "iters": len(ordered),
    }  # fmt: skip


def speedup_columns(reference_ms: Sequence[float], samples_ms: Sequence[float],
                    reference_rounds: Sequence[int] | None = None, rounds: Sequence[int] | None = None
                    ) -> dict[str, float]:  # fmt: skip
    """Reference p50 ÷ variant p50 (both timed in one session) and the 95% interval of that ratio, from bootstrap
    resamples of the two sample sets (each in timing order) that draw the same rounds for both: a round is one
    process's conditions, shared by the two files it timed."""
    paired = reference_rounds is not None and rounds is not None and len(reference_rounds) == len(rounds) > 1
    picks = round_picks(len(rounds)) if paired else None
    ref = bootstrap_medians(reference_ms, reference_rounds, seed=1, picks=picks)
    var = bootstrap_medians(samples_ms, rounds, seed=2, picks=picks)
    lo, hi = interval(ref / var)
    reference_p50 = statistics.median(reference_ms)
    return {"ref_latency_ms_p50": reference_p50, "speedup_x": reference_p50 / statistics.median(samples_ms),
            "speedup_x_lo": lo, "speedup_x_hi": hi}  # fmt: skip
