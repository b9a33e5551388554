"""What phone ran a benchmark (getprop) and how warm it was (dumpsys battery), plus the optional cooldown."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from adb_bench.transport import Adb

log = logging.getLogger(__name__)

PROP_LINE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$", re.MULTILINE)
BATTERY_TEMP = re.compile(r"^\s*temperature:\s*(-?\d+)", re.MULTILINE)
# row column → getprop keys, first one set wins (ro.soc.* exist from Android 12 on)
FIELDS = {
    "device_model": ("ro.product.model",),
    "device_manufacturer": ("ro.product.manufacturer",),
    "device_soc": ("ro.soc.model", "ro.hardware.chipname", "ro.board.platform"),
    "device_board": ("ro.board.platform", "ro.product.board", "ro.hardware"),
    "device_abi": ("ro.product.cpu.abi",),
    "android": ("ro.build.version.release",),
    "android_sdk": ("ro.build.version.sdk",),
    "device_build": ("ro.build.fingerprint",),
}


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output (`[key]: [value]` lines) → dict."""
    return dict(PROP_LINE.findall(text.replace("\r", "")))


def fingerprint_of(props: dict[str, str]) -> dict[str, str]:
    return {column: next((props[k] for k in keys if props.get(k)), "") for column, keys in FIELDS.items()}


def parse_battery_temp_c(text: str) -> float | None:
    """`dumpsys battery` reports `temperature: 312` in tenths of a degree Celsius → 31.2."""
    match = BATTERY_TEMP.search(text)
    return int(match[1]) / 10 if match else None


def read_fingerprint(adb: Adb) -> dict[str, str]:
    return fingerprint_of(parse_getprop(adb.check(["getprop"])))


def battery_temp_c(adb: Adb) -> float | None:
    """Battery temperature now; None when the device does not report one."""
    result = adb.shell(["dumpsys", "battery"])
    return parse_battery_temp_c(result.out) if result.code == 0 else None


def cool_down(read_temp: Callable[[], float | None], max_temp_c: float, max_wait_s: float, poll_s: float,
              sleep: Callable[[float], None] = time.sleep) -> float:  # fmt: skip
    """Wait until the temperature is ≤ `max_temp_c` or `max_wait_s` has passed; the seconds waited."""
    start = time.monotonic()
    while (temp := read_temp()) is not None and temp > max_temp_c:
        waited = time.monotonic() - start
        if waited >= max_wait_s:
            log.warning("still %.1f°C after %.0fs of cooldown; benchmarking anyway", temp, waited)
            break
        log.info("battery %.1f°C > %.1f°C: cooling down", temp, max_temp_c)
        sleep(min(poll_s, max_wait_s - waited))
    return time.monotonic() - start
