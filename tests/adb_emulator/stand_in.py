"""What every benchmark-binary stand-in does on the emulated phone besides printing its program's texts: record its
runs, draw the battery's load current while it runs, obey the fault files, do its work in a fork of the zygote.

Fault files in $PHONE_ROOT: `hang` (sleep 120 s), `slow` (seconds to sleep), `segv_in_main` / `segv_at_exit`
(SIGSEGV where the stand-in calls `crash_here`). Every run appends `start <pid>` / `end <pid>` to
$PHONE_ROOT/runs.log; while it runs, the battery's sysfs current_now holds `load_current_now`, then
`idle_current_now` again. Imported by the stand-ins through the phone's PYTHONPATH.
"""

from __future__ import annotations

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


def _record(event: str) -> None:
    with open(os.path.join(_root(), "runs.log"), "a") as handle:
        handle.write(f"{event} {os.getpid()}\n")


def _set_current(name: str) -> None:
    supply = os.path.join(_root(), "sys/class/power_supply/battery")
    if os.path.exists(os.path.join(supply, name)):
        with open(os.path.join(supply, name)) as source, open(os.path.join(supply, "current_now"), "w") as sink:
            sink.write(source.read())


def start_run() -> None:
    """`start` in runs.log, the load current, then the `hang` / `slow` faults."""
    _record("start")
    _set_current("load_current_now")
    for name, seconds in (("hang", "120"), ("slow", None)):
        if os.path.exists(os.path.join(_root(), name)):
            with open(os.path.join(_root(), name)) as handle:
                time.sleep(float(seconds or handle.read()))


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
