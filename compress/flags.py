"""The `flags` column: which speedups, size reductions and accuracies of a row mean less than they seem."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

MACS_REDUCTION = 1.5  # "MACs ≥ 1.5× fewer"
NONZERO_REDUCTION = 2.0  # "nonzeros ≥ 2× fewer"
SHRINK = 1.05  # a file less than 5% smaller "did not shrink"
COLLAPSE = 0.10  # accuracy more than 10 points below the base
BUSY_CORES = 0.25  # other processes kept more than a quarter of a core busy on average while the host timed
# (idle: ~0.02; a compiler or a `while True` loop: ~1 per process they run; README)
SAME_SPEED = 1.03  # speedups within 3% either way count as no change: one pair's speedup_x moves that much from
# one benchmark process to the next on a shared machine, more than its in-session interval says (README)

# Every flag with the line the report prints for it, in the order rows list them.
EXPLANATIONS = {
    "within_noise": f"the 95% interval of the speedup reaches into {1 / SAME_SPEED:.2f}–{SAME_SPEED:.2f}: not "
    f"measurably faster or slower than the base by more than {SAME_SPEED - 1:.0%}",
    "slower": f"measurably slower than the base (the whole 95% interval of the speedup is below {1 / SAME_SPEED:.2f})",
    "no_real_speedup": f"≥ {MACS_REDUCTION:g}× fewer MACs but not measurably faster (by more than "
    f"{SAME_SPEED - 1:.0%}): the runtime does not turn "
    "the removed work into time (e.g. zeros still multiplied, extra layers, int8 kernels slower than fp32)",
    "no_size_reduction": f"≥ {NONZERO_REDUCTION:g}× fewer nonzero parameters but the file shrank by less than "
    f"{SHRINK - 1:.0%}: the zeros are stored densely (size_gzip_bytes shows what compression recovers)",
    "accuracy_collapse": f"top-1 accuracy more than {COLLAPSE * 100:g} points below the base model",
    "busy_host": f"other processes kept more than {BUSY_CORES:g} cores of the host busy on average while it timed "
    "(host_other_cpu): its latencies and speedup were measured under load",
}


def _number(row: Mapping[str, Any], col: str) -> float:
    """The row's value of `col` as a float; NaN when missing or empty (every comparison with it is false)."""
    value = row.get(col)
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _speedup_interval(row: Mapping[str, Any]) -> tuple[float, float]:
    """The speedup's 95% interval; the point estimate on both sides when the row has no interval."""
    point = _number(row, "speedup_x")
    lo, hi = _number(row, "speedup_x_lo"), _number(row, "speedup_x_hi")
    return (point, point) if math.isnan(lo) or math.isnan(hi) else (lo, hi)


def row_flags(row: Mapping[str, Any]) -> list[str]:
    """The flags that hold for one row (by name, in EXPLANATIONS order); none for failed rows; the base row only
    `busy_host` (its own latency was measured under load too)."""
    if row.get("status") != "ok":
        return []
    if row.get("technique") == "none":
        return ["busy_host"] if _number(row, "host_other_cpu") > BUSY_CORES else []
    lo, hi = _speedup_interval(row)
    holds = {
        "within_noise": lo <= SAME_SPEED and hi >= 1 / SAME_SPEED,
        "slower": hi < 1 / SAME_SPEED,
        "no_real_speedup": _number(row, "macs_reduction_x") >= MACS_REDUCTION and lo <= SAME_SPEED,
        "no_size_reduction": _number(row, "nonzero_reduction_x") >= NONZERO_REDUCTION
        and _number(row, "compression_x") < SHRINK,
        "accuracy_collapse": _number(row, "acc_delta") < -COLLAPSE,
        "busy_host": _number(row, "host_other_cpu") > BUSY_CORES,
    }
    return [flag for flag in EXPLANATIONS if holds[flag]]


def flags_column(table: pd.DataFrame) -> pd.Series:
    """`row_flags` of every row, `;`-joined ("" when none)."""
    return pd.Series([";".join(row_flags(row)) for row in table.to_dict("records")], index=table.index, dtype=str)
