"""Energy per inference from the battery's fuel gauge: sysfs current_now × voltage_now sampled on the phone
while the benchmark runs, minus an idle baseline sampled just before (pure arithmetic on the sample text).

Units differ between phones (µA/µV on most, mA/mV on some) and so does the sign of a discharging current;
`auto` tells them apart by magnitude and takes the sign of the mean current during the runs as discharge.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from adb_bench.errors import DeviceError

CURRENT_UNITS = {"uA": 1e-6, "mA": 1e-3}
VOLTAGE_UNITS = {"uV": 1e-6, "mV": 1e-3}
MIN_UA = 10_000  # a median |current| below this is mA (10 mA in µA is implausibly low for a phone running a model)
MIN_UV = 100_000  # a median voltage below this is mV


@dataclass(frozen=True)
class EnergySettings:
    """device.energy: which power supply to read, how often, how long the idle baseline is, the units."""

    enabled: bool = True
    supply: str = "battery"
    interval_s: float = 0.1
    idle_s: float = 2.0
    current_unit: str = "auto"
    voltage_unit: str = "auto"

    def __post_init__(self) -> None:
        for knob, value, units in (("current_unit", self.current_unit, CURRENT_UNITS),
                                   ("voltage_unit", self.voltage_unit, VOLTAGE_UNITS)):  # fmt: skip
            if value != "auto" and value not in units:
                raise DeviceError(f"device.energy.{knob}={value!r}: use auto, {' or '.join(units)}")
        if self.interval_s <= 0 or self.idle_s <= 0:
            raise DeviceError("device.energy.interval_s and idle_s must be > 0")

    @property
    def paths(self) -> tuple[str, str]:
        folder = f"/sys/class/power_supply/{self.supply}"
        return f"{folder}/current_now", f"{folder}/voltage_now"


def parse_samples(text: str) -> list[tuple[float, float]]:
    """`current voltage` lines (raw sysfs integers) → pairs; anything else is skipped."""
    pairs = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and all(f.lstrip("-").isdigit() for f in fields):
            pairs.append((float(fields[0]), float(fields[1])))
    return pairs


def units_of(samples: list[tuple[float, float]], current_unit: str, voltage_unit: str) -> tuple[str, str]:
    """The configured units, or for `auto` the ones the magnitudes say."""
    if current_unit == "auto":
        current_unit = "uA" if statistics.median(abs(i) for i, _ in samples) >= MIN_UA else "mA"
    if voltage_unit == "auto":
        voltage_unit = "uV" if statistics.median(v for _, v in samples) >= MIN_UV else "mV"
    return current_unit, voltage_unit


def watts(samples: list[tuple[float, float]], units: tuple[str, str], sign: float) -> float:
    """Mean power in W of (current, voltage) samples, the current's sign flipped by `sign` to discharge > 0."""
    scale = CURRENT_UNITS[units[0]] * VOLTAGE_UNITS[units[1]] * sign
    return statistics.fmean(i * v * scale for i, v in samples)


def energy_columns(idle_text: str, run_text: str, mean_latency_ms: float, settings: EnergySettings) -> dict:
    """`energy_mj_per_inf` = (mean power during the runs − idle power) × mean latency, with `power_w_mean`,
    `power_w_idle` and `power_samples`; `notes` says why the energy is empty when it cannot be resolved."""
    idle, run = parse_samples(idle_text), parse_samples(run_text)
    if not idle or not run:
        return {"notes": ["energy not measured: no current/voltage samples were read"]}
    units = units_of(run, settings.current_unit, settings.voltage_unit)
    sign = -1.0 if statistics.fmean(i for i, _ in run) < 0 else 1.0
    busy, rest = watts(run, units, sign), watts(idle, units, sign)
    row: dict = {"power_w_mean": busy, "power_w_idle": rest, "power_samples": len(run)}
    if busy <= rest:
        row["notes"] = [f"energy not resolved: {busy:.3f} W during the runs vs {rest:.3f} W idle; raise device.iters"]
        return row
    return row | {"energy_mj_per_inf": (busy - rest) * mean_latency_ms}  # W × ms = mJ
