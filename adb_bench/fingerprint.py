"""What phone ran a benchmark (getprop), its battery (dumpsys battery: temperature, power source), cooldown."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from adb_bench.transport import Adb

log = logging.getLogger(__name__)

# `[key]: [value]`; a value may span lines (it ends at the first `]` that ends a line)
PROP_LINE = re.compile(r"^\[([^\]\n]+)\]: \[(.*?)\]$", re.MULTILINE | re.DOTALL)
BATTERY_LINE = re.compile(r"^[ \t]*([A-Za-z][\w ]*?):[ \t]*(.*?)[ \t]*$", re.MULTILINE)
POWERED = {"AC powered": "ac", "USB powered": "usb", "Wireless powered": "wireless", "Dock powered": "dock"}
CHARGING = 2  # BatteryManager.BATTERY_STATUS_CHARGING
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


@dataclass(frozen=True)
class Battery:
    """What `dumpsys battery` says: temperature (°C, None when not reported), external power, status code."""

    temp_c: float | None
    powered: tuple[str, ...]
    status: int | None

    @property
    def charging(self) -> bool:
        return self.status == CHARGING

    @property
    def source(self) -> str:
        """`battery`, or the external supplies it is on: `usb`, `ac`, `wireless`, `dock` (joined by +)."""
        return "+".join(self.powered) or "battery"


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output (`[key]: [value]` lines, CRLF from a pty, multi-line values) → dict."""
    return dict(PROP_LINE.findall(text.replace("\r\n", "\n").replace("\r", "")))


def fingerprint_of(props: dict[str, str]) -> dict[str, str]:
    """The row's device columns; a multi-line value is joined into one line, a missing one is ''."""
    found = {column: next((props[k] for k in keys if props.get(k)), "") for column, keys in FIELDS.items()}
    return {column: " ".join(value.split("\n")).strip() for column, value in found.items()}


def parse_battery(text: str) -> Battery:
    """`dumpsys battery` → Battery; temperature is in tenths of a degree, 0 means no sensor (boards, TV boxes)."""
    fields: dict[str, str] = {}
    for key, value in BATTERY_LINE.findall(text.replace("\r", "")):
        fields.setdefault(key, value)  # the first section (Current Battery Service state) wins
    temp = fields.get("temperature", "")
    tenths = int(temp) if re.fullmatch(r"-?\d+", temp) else 0
    status = fields.get("status", "")
    return Battery(
        temp_c=tenths / 10 if tenths else None,
        powered=tuple(name for key, name in POWERED.items() if fields.get(key) == "true"),
        status=int(status) if status.isdigit() else None,
    )


def read_fingerprint(adb: Adb) -> dict[str, str]:
    return fingerprint_of(parse_getprop(adb.check(["getprop"])))


def read_battery(adb: Adb) -> Battery:
    """The battery now; an empty Battery when `dumpsys battery` fails (no battery service)."""
    result = adb.shell(["dumpsys", "battery"])
    return parse_battery(result.out) if result.code == 0 else Battery(None, (), None)


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
