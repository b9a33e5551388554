"""What every benchmark-binary stand-in does on the emulated phone besides printing its program's texts: record its
runs, draw the battery's load current while it runs, obey the fault files, do its work in a fork of the zygote.

Fault files in $PHONE_ROOT: `hang` (sleep 120 s), `slow` (seconds to sleep), `load_reads` (stay at the load
current until the session's sampler has read the gauge that many times at it: a run as long as the gauge needs, on
any machine and under any load), `segv_in_main` / `segv_at_exit` (SIGSEGV where the stand-in calls `crash_here`).
Every run appends `start <pid>` / `end <pid>` to $PHONE_ROOT/runs.log; while it runs, the battery's sysfs
current_now holds `load_current_now`, then `idle_current_now` again (replaced whole: a sampler never reads it
half-written). Imported by the stand-ins through the phone's PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable

from adb_emulator.zygote import run_in_zygote


def _root() -> str:
    return os.environ["PHONE_ROOT"]


def crash_here(name: str) -> None:
    """SIGSEGV now when the fault file `name` exists."""
    if os.path.exists(os.path.join(_root(), name)):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)


def _fault(name: str) -> str | None:
    """The text of the fault file `name` in $PHONE_ROOT, None when there is none."""
    path = os.path.join(_root(), name)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return handle.read()


def _record(event: str) -> None:
    with open(os.path.join(_root(), "runs.log"), "a") as handle:
        handle.write(f"{event} {os.getpid()}\n")


def _supply(name: str) -> str:
    return os.path.join(_root(), "sys/class/power_supply/battery", name)


def _set_current(name: str) -> None:
    if os.path.exists(_supply(name)):
        partial = _supply(f"current_now.{os.getpid()}")
        with open(_supply(name)) as source, open(partial, "w") as sink:
            sink.write(source.read())
        os.replace(partial, _supply("current_now"))


def _power_file() -> str:
    """Where the session's sampler writes this run's gauge readings: $3 of the RUN wrapper (adb_bench/session.py),
    the shell that started this process."""
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    return argv[6].decode() if len(argv) > 6 else ""


def _wait_for_reads(count: int, limit_s: float = 60.0) -> None:
    """Until the run's power file holds `count` readings of the load current (at most `limit_s`: a sampler that
    stopped shows as too few load readings in the row)."""
    power, deadline = _power_file(), time.monotonic() + limit_s
    with open(_supply("load_current_now")) as handle:
        load = handle.read().split()
    while power and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError), open(power) as handle:
            if sum(line.split()[:1] == load for line in handle) >= count:
                return
        time.sleep(0.01)


def start_run() -> None:
    """`start` in runs.log, the load current, then the `hang` / `slow` / `load_reads` faults."""
    _record("start")
    _set_current("load_current_now")
    if (reads := _fault("load_reads")) is not None:
        _wait_for_reads(int(reads))
    for name, seconds in (("hang", "120"), ("slow", None)):
        if (text := _fault(name)) is not None:
            time.sleep(float(seconds or text))


def end_run() -> None:
    """The idle current again, `end` in runs.log."""
    _set_current("idle_current_now")
    _record("end")


def run_work(script: str, run_here: Callable[..., None], args: list) -> None:
    """`run_here(*args)` (a function of the stand-in `script`): in a fork of the zygote when $PHONE_ZYGOTE is set,
    ending the way that fork ended; else in this process."""
    if os.environ.get("PHONE_ZYGOTE"):
        run_in_zygote(os.environ["PHONE_ZYGOTE"], os.path.abspath(script), args)
    else:
        run_here(*args)
