"""Peak memory of a benchmark process: the kernel's high-water mark of its resident set (`VmHWM` in
/proc/PID/status), read on the host by a forked child that loaded and ran the file, on a phone by the session's
shell wrapper while the binary runs."""

from __future__ import annotations

import contextlib
import ctypes
import re
from pathlib import Path

HIGH_WATER = re.compile(r"^VmHWM:\s*(\d+)\s*kB\s*$", re.MULTILINE)


def high_water_kb(status: str) -> int | None:
    """The highest `VmHWM` line of a text (kB): a /proc/PID/status, or the lines a phone's wrapper appended while a
    run went on. None where there is none (a kernel thread, a process that has exited, a /proc that hides it)."""
    return max(map(int, HIGH_WATER.findall(status)), default=None)


def own_high_water_kb() -> int | None:
    """This process's high-water mark, None where /proc is not there (not Linux)."""
    try:
        return high_water_kb(Path("/proc/self/status").read_text())
    except OSError:
        return None


def restart_high_water() -> None:
    """Start this process's high-water mark from what it holds now: free heap pages go back to the kernel (glibc's
    `malloc_trim`; a forked child inherits its parent's freed but resident heap, which the model's allocations would
    reuse unseen), then the mark is reset to the resident set (`5` to /proc/self/clear_refs, Linux 4.0+). Where
    either is missing the mark keeps counting from the fork."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
