"""Latency columns: percentiles, the bootstrap interval of the median (coverage, narrowing), the speedup interval."""

from __future__ import annotations

import numpy as np
import pytest

from compress import latency
from compress.latency import bootstrap_medians, interval, latency_columns, speedup_columns

TRUE_MEDIAN = 0.14  # ms; log-normal timings: median = exp(mu)


def timings(n: int, seed: int, median: float = TRUE_MEDIAN, sigma: float = 0.3) -> list[float]:
    """A right-skewed synthetic latency sample (like real timings) with a known median."""
    return list(np.random.default_rng(seed).lognormal(np.log(median), sigma, n))


def test_latency_columns_percentiles_and_keys():
    cols = latency_columns([5.0, 1.0, 4.0, 2.0, 3.0])
    assert set(cols) == {
        "latency_ms_p50", "latency_ms_p50_lo", "latency_ms_p50_hi", "latency_ms_p90", "latency_ms_mean",
        "latency_ms_std", "latency_ms_min", "iters",
    }  # fmt: skip
    assert cols["latency_ms_p50"] == 3.0 and cols["latency_ms_p90"] == pytest.approx(4.6)
    assert cols["latency_ms_mean"] == 3.0 and cols["latency_ms_std"] == pytest.approx(2**0.5)
    assert cols["latency_ms_min"] == 1.0 and cols["iters"] == 5
    assert 1.0 <= cols["latency_ms_p50_lo"] <= 3.0 <= cols["latency_ms_p50_hi"] <= 5.0


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no latency samples"):
        latency_columns([])


def test_bootstrap_interval_contains_the_true_median():
    cols = latency_columns(timings(300, seed=0))
    assert cols["latency_ms_p50_lo"] < TRUE_MEDIAN < cols["latency_ms_p50_hi"]
    # and it does so about 95% of the time, over independent samples
    hits = [lo < TRUE_MEDIAN < hi for lo, hi in (interval(bootstrap_medians(timings(101, s))) for s in range(1, 121))]
    assert 0.87 <= np.mean(hits) <= 1.0


def test_bootstrap_interval_narrows_with_more_samples():
    widths = {}
    for n in (100, 1600):
        cols = latency_columns(timings(n, seed=n))
        widths[n] = cols["latency_ms_p50_hi"] - cols["latency_ms_p50_lo"]
    assert widths[1600] < widths[100] / 2  # ~1/sqrt(n): 4x narrower in theory


def correlated_timings(n: int, seed: int, phi: float = 0.8) -> np.ndarray:
    """Timings whose noise is AR(1) in log space (consecutive runs share machine state); median TRUE_MEDIAN."""
    rng = np.random.default_rng(seed)
    noise = np.empty(n)
    noise[0] = rng.normal() / np.sqrt(1 - phi**2)
    for t, e in enumerate(rng.normal(size=n - 1), start=1):
        noise[t] = phi * noise[t - 1] + e
    return TRUE_MEDIAN * np.exp(0.1 * noise)


def coverage(samples: list[np.ndarray]) -> float:
    """How often the bootstrap interval (500 resamples: enough for a coverage estimate) holds the true median."""
    found = (interval(bootstrap_medians(x, resamples=500)) for x in samples)
    return float(np.mean([lo < TRUE_MEDIAN < hi for lo, hi in found]))


def test_block_bootstrap_keeps_its_coverage_when_consecutive_timings_are_correlated(monkeypatch):
    samples = [correlated_timings(300, seed) for seed in range(100)]
    assert coverage(samples) >= 0.75  # 0.81 here; nominal 0.95 needs longer runs than n^(1/3) at this correlation
    monkeypatch.setattr(latency, "block_length", lambda n: 1)  # runs of 1 = the i.i.d. bootstrap
    assert coverage(samples) < 0.7  # too narrow: it misses the true median far more often than 5%


def test_bootstrap_in_chunks_draws_every_resample(monkeypatch):
    sample = timings(500, seed=3)
    whole = bootstrap_medians(sample)
    monkeypatch.setattr(latency, "CHUNK", 1200)  # 2 resamples per chunk
    chunked = bootstrap_medians(sample)
    assert len(chunked) == len(whole) == latency.RESAMPLES
    assert interval(chunked) == pytest.approx(interval(whole), rel=0.02)


def test_speedup_interval_contains_the_true_ratio_about_95_percent_of_the_time():
    runs = [speedup_columns(timings(101, seed=2 * s, median=0.28), timings(101, seed=2 * s + 1)) for s in range(100)]
    assert 0.87 <= np.mean([c["speedup_x_lo"] < 2.0 < c["speedup_x_hi"] for c in runs]) <= 1.0
    assert all(c["speedup_x_lo"] > 1.0 for c in runs)  # a 2x speedup is never mistaken for noise
    assert np.median([c["speedup_x"] for c in runs]) == pytest.approx(2.0, rel=0.02)
    assert runs[0]["ref_latency_ms_p50"] == pytest.approx(0.28, rel=0.1)


def test_speedup_of_two_samples_of_the_same_timings_contains_one():
    cols = speedup_columns(timings(400, seed=20), timings(400, seed=21))
    assert cols["speedup_x_lo"] < 1.0 < cols["speedup_x_hi"]


def rounds_of_levels(rounds: int, n: int, seed: int, median: float = TRUE_MEDIAN) -> list[float]:
    """`rounds` rounds of `n` timings, each round at its own level (a process's memory layout, its machine state:
    log-normal, 10% spread) with 3% noise inside it; the median over processes is `median`."""
    rng = np.random.default_rng(seed)
    return [median * level * t for level in rng.lognormal(0, 0.1, rounds) for t in rng.lognormal(0, 0.03, n)]


def test_an_interval_over_rounds_holds_the_median_over_processes_where_one_within_them_does_not():
    sessions = [rounds_of_levels(6, 50, seed) for seed in range(100)]
    within = [interval(bootstrap_medians(s, resamples=500)) for s in sessions]
    over = [interval(bootstrap_medians(s, [50] * 6, resamples=500)) for s in sessions]
    assert np.mean([lo < TRUE_MEDIAN < hi for lo, hi in over]) >= 0.8  # 0.89
    assert np.mean([lo < TRUE_MEDIAN < hi for lo, hi in within]) < 0.6  # 0.47: the process level is outside it


def test_rounds_of_unequal_sizes_and_a_count_that_does_not_add_up():
    sample = timings(30, seed=4)
    lo, hi = interval(bootstrap_medians(sample, [10, 5, 15]))
    assert lo <= np.median(sample) <= hi
    with pytest.raises(ValueError, match="rounds of \\[10, 5\\] samples do not add up to 30"):
        bootstrap_medians(sample, [10, 5])


def test_the_speedup_draws_the_same_rounds_for_both_files():
    """A level shared by the two files of a round (the machine's state then) cancels in their ratio: the paired
    interval is narrow and holds the true 2x. Levels of each file's own (where its memory landed) widen it, and
    it still holds 2x about as often as it promises, where an interval within rounds does not."""
    rng = np.random.default_rng(7)
    shared = rng.lognormal(0, 0.1, 5)
    ref = [0.28 * level * t for level in shared for t in rng.lognormal(0, 0.02, 40)]
    var = [0.14 * level * t for level in shared for t in rng.lognormal(0, 0.02, 40)]
    paired = speedup_columns(ref, var, [40] * 5, [40] * 5)
    assert paired["speedup_x_lo"] < 2.0 < paired["speedup_x_hi"] < 1.05 * paired["speedup_x_lo"]
    pairs = [(rounds_of_levels(5, 40, 2 * s, 0.28), rounds_of_levels(5, 40, 2 * s + 1, 0.14)) for s in range(60)]
    over = [speedup_columns(a, b, [40] * 5, [40] * 5) for a, b in pairs]
    within = [speedup_columns(a, b) for a, b in pairs]
    assert np.mean([c["speedup_x_lo"] < 2.0 < c["speedup_x_hi"] for c in over]) >= 0.85
    assert np.mean([c["speedup_x_lo"] < 2.0 < c["speedup_x_hi"] for c in within]) < 0.75
