"""This machine's shared resources, coordinated across every job of every sweep running on it: compute slots
(usable cores ÷ threads per job, so parallel launchers never oversubscribe the CPU) and the idle-host lock that a
host benchmark holds (no job computes and no other benchmark runs while it times)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, ReadWriteLock, Timeout

# Host-local on purpose: not the cache dir (shared by the nodes of a cluster), not $TMPDIR (private to a SLURM job).
LOCK_DIR = Path("/tmp") / f"pocketbench-{os.getuid()}"
POLL_S = 0.2


def usable_cores() -> int:
    """Cores this process may run on (respects taskset, cgroups cpusets and SLURM allocations)."""
    return len(os.sched_getaffinity(0))


def _host_lock() -> ReadWriteLock:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    return ReadWriteLock(LOCK_DIR / "host.db")


@contextmanager
def _slot(slots: int) -> Iterator[None]:
    """One of `slots` compute slots (a lock file each): the first free one, waiting until one is."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(slots):
            lock = FileLock(LOCK_DIR / f"slot-{i}.lock", blocking=False)
            try:
                lock.acquire()
            except Timeout:
                continue
            try:
                yield
            finally:
                lock.release()
            return
        time.sleep(POLL_S)


@contextmanager
def computing(threads: int) -> Iterator[float]:
    """Hold a compute slot (of usable cores ÷ `threads`) and a share of the host; yields the seconds waited.
    The slot comes first, so a job waiting for one does not hold back a benchmark."""
    start = time.monotonic()
    with _slot(max(1, usable_cores() // max(threads, 1))), _host_lock().read_lock():
        yield time.monotonic() - start


@contextmanager
def idle_host() -> Iterator[float]:
    """Hold the host alone (waits for running computations, blocks new ones); yields the seconds waited."""
    start = time.monotonic()
    with _host_lock().write_lock():
        yield time.monotonic() - start


def load_1m() -> float:
    """The 1-minute load average: how busy the host was around a measurement."""
    return os.getloadavg()[0]
