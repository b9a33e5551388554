"""Pure parser of speed_benchmark_torch output → per-iteration latencies in microseconds."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from adb_bench.errors import DeviceError

OBSERVER = re.compile(r"PyTorchObserver\s+(\{.*\})")
SUMMARY = re.compile(r"Microseconds per iter:\s*(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")
UNIT_US = {"us": 1.0, "ms": 1e3, "ns": 1e-3, "s": 1e6}


class GarbledOutput(DeviceError):
    """The binary exited 0 but printed no latency we can read."""


@dataclass(frozen=True)
class Timings:
    samples_us: list[float]
    source: str  # "observer": one sample per iteration; "summary": only the mean was printed


def _observer_sample(payload: str) -> float | None:
    """The latency in µs of one `PyTorchObserver {...}` payload, None for other observer records."""
    try:
        record = json.loads(payload)
    except json.JSONDecodeError:
        return None
    if record.get("type") != "NET" or record.get("metric") != "latency" or record.get("unit") not in UNIT_US:
        return None
    try:
        return float(record["value"]) * UNIT_US[record["unit"]]  # value is a string like "1.23457e+06"
    except (KeyError, TypeError, ValueError):
        return None


def parse_speed_benchmark(text: str) -> Timings:
    """Every PyTorchObserver latency line; else the `Microseconds per iter` summary; else GarbledOutput."""
    samples = [s for m in OBSERVER.finditer(text) if (s := _observer_sample(m[1])) is not None]
    if samples:
        return Timings(samples, "observer")
    summary = SUMMARY.search(text)
    if summary:
        return Timings([float(summary[1])], "summary")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "<no output>")
    raise GarbledOutput(
        "no latency in speed_benchmark_torch output (no PyTorchObserver line, no 'Microseconds per iter'): "
        + first[:160]
    )
