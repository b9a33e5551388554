"""`python cli.py devices`: every device the adb server knows, with what it is and how warm it is."""

from __future__ import annotations

from adb_bench.errors import DeviceError
from adb_bench.fingerprint import read_battery, read_fingerprint
from adb_bench.transport import Adb, state_problem

COLUMNS = ("serial", "state", "device_model", "device_soc", "device_board", "device_abi", "android", "battery_c",
           "power")  # fmt: skip


def device_rows(adb_exe: str = "adb", host: str | None = None, port: int | None = None) -> list[dict]:
    """One dict per device; a device that is not ready says why in `note`."""
    rows = []
    for serial, state in Adb(adb_exe, None, host, port).devices():
        row: dict = {"serial": serial, "state": state}
        if state == "device":
            adb = Adb(adb_exe, serial, host, port, timeout_s=20)
            try:
                battery = read_battery(adb)
                row |= read_fingerprint(adb) | {"battery_c": battery.temp_c, "power": battery.source}
            except DeviceError as exc:
                row["note"] = str(exc)
        else:
            row["state"] = state.split(" (")[0]  # `no permissions (...); see [...]`: the note has the rest
            row["note"] = str(state_problem(serial, state))
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    """An aligned text table, notes under their device; a hint when nothing is attached."""
    if not rows:
        return "no devices attached: enable USB debugging on the phone, plug it in, accept the prompt, run adb devices"
    cells = [list(COLUMNS)] + [["" if r.get(c) is None else str(r.get(c, "")) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for i, line in enumerate(cells):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if i and rows[i - 1].get("note"):
            lines.append(f"  -> {rows[i - 1]['note']}")
    return "\n".join(lines)
