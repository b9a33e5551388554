"""This host's CPU as a benchmark sees it: its model and the ISA features that pick int8/fp32 kernels (parsed from
/proc/cpuinfo text), and the CPU time other processes used while a session ran (from /proc/stat)."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

# The features the kernels of torch (fbgemm, oneDNN, qnnpack), XNNPACK and ExecuTorch dispatch on, in the order
# the row lists them. x86: wide vectors and fused multiply-add (fp32), VNNI / AMX (int8 dot products), bf16/fp16.
# arm64 (kernel names): asimd = NEON, asimddp = the int8 dot product (sdot), i8mm = int8 matrix multiply, sve.
KERNEL_FEATURES = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "svei8mm", "sme",
)  # fmt: skip
IMPLEMENTERS = {"0x41": "ARM", "0x42": "Broadcom", "0x48": "HiSilicon", "0x51": "Qualcomm", "0x61": "Apple",
                "0x46": "Fujitsu", "0x4e": "NVIDIA", "0xc0": "Ampere"}  # fmt: skip


def _field(cpuinfo: str, name: str) -> str | None:
    """The first `name : value` of /proc/cpuinfo text (the first processor's)."""
    found = re.search(rf"^{name}\s*:\s*(.*\S)\s*$", cpuinfo, re.MULTILINE)
    return found[1] if found else None


def cpu_model(cpuinfo: str) -> str | None:
    """The CPU's name in /proc/cpuinfo text: `model name` on x86; on arm64, which has none, the implementer and
    the part number (`ARM part 0xd40`), or the board's `Hardware` line; None when the text says neither."""
    name = _field(cpuinfo, "model name")
    if name:
        return name
    implementer, part = _field(cpuinfo, "CPU implementer"), _field(cpuinfo, "CPU part")
    if implementer and part:
        return f"{IMPLEMENTERS.get(implementer.lower(), implementer)} part {part}"
    return _field(cpuinfo, "Hardware")


def cpu_features(cpuinfo: str) -> str:
    """The KERNEL_FEATURES of the first processor in /proc/cpuinfo text (x86 `flags`, arm64 `Features`),
    space-separated in KERNEL_FEATURES order ("" when it lists none)."""
    present = set((_field(cpuinfo, "flags") or _field(cpuinfo, "Features") or "").split())
    return " ".join(f for f in KERNEL_FEATURES if f in present)


def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="replace") if path.exists() else ""


def this_cpu() -> dict[str, str]:
    """{cpu_model, cpu_features} of this machine (platform's names where there is no /proc/cpuinfo)."""
    text = _cpuinfo()
    return {"cpu_model": cpu_model(text) or platform.processor() or platform.machine(),
            "cpu_features": cpu_features(text)}  # fmt: skip


@dataclass(frozen=True)
class CpuClock:
    """One reading: busy CPU seconds of the whole machine, CPU seconds of this process and its waited-for children,
    and the wall clock."""

    machine_busy_s: float
    own_s: float
    wall_s: float


BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system irq softirq of /proc/stat's `cpu` line (guest time is in user);
# idle, iowait and steal (time the hypervisor gave to other machines) are not this machine's processes running


def machine_busy_s(stat: str) -> float:
    """Busy CPU seconds of all cores since boot, from /proc/stat text."""
    fields = [int(v) for v in re.search(r"^cpu\s+(.*)$", stat, re.MULTILINE)[1].split()]
    return sum(fields[i] for i in BUSY_FIELDS) / os.sysconf("SC_CLK_TCK")


def read_clock() -> CpuClock | None:
    """The clock now; None where there is no /proc/stat (not Linux)."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    own = os.times()
    return CpuClock(machine_busy_s(stat.read_text()), own.user + own.system + own.children_user +
                    own.children_system, own.elapsed)  # fmt: skip


def other_cpu(start: CpuClock | None, end: CpuClock | None) -> float | None:
    """Cores busy with other processes between two readings, on average: the machine's busy CPU time minus this
    process's and its children's, over the wall time (never below 0: the two clocks tick separately)."""
    if start is None or end is None or end.wall_s <= start.wall_s:
        return None
    others = (end.machine_busy_s - start.machine_busy_s) - (end.own_s - start.own_s)
    return max(others, 0.0) / (end.wall_s - start.wall_s)
