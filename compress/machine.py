"""This machine's shared resources, coordinated across every job of every sweep running on it: its CPUs (a job
computes holding `threads` of them, so parallel launchers never oversubscribe the machine) and the idle-host lock
that a host benchmark holds (no job computes and no other benchmark runs while it times)."""

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


def concurrent_stages(threads: int) -> int:
    """How many stages of `threads` threads run at once on the CPUs this process may use (taskset, cgroup
    cpusets and SLURM allocations respected)."""
    return max(1, len(os.sched_getaffinity(0)) // max(threads, 1))


def _host_lock() -> ReadWriteLock:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    return ReadWriteLock(LOCK_DIR / "host.db")


def _acquired(cpus: list[int], count: int) -> list[FileLock] | None:
    """`count` of the CPU locks of `cpus` if that many are free now (held), else None (none held)."""
    held: list[FileLock] = []
    for cpu in cpus:
        lock = FileLock(LOCK_DIR / f"cpu-{cpu}.lock", blocking=False)
        try:
            lock.acquire()
        except Timeout:
            continue
        held.append(lock)
        if len(held) == count:
            return held
    for lock in held:
        lock.release()
    return None


@contextmanager
def computing(threads: int) -> Iterator[float]:
    """Hold `threads` of this process's CPUs (a lock per CPU id, shared by every job on the machine, so jobs with
    other cpusets or thread counts count right) and a share of the host; yields the seconds waited. The CPUs
    come first, so a job waiting for them does not hold back a benchmark."""
    start = time.monotonic()
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    while (held := _acquired(cpus, min(max(threads, 1), len(cpus)))) is None:
        time.sleep(POLL_S)
    try:
        with _host_lock().read_lock():
            yield time.monotonic() - start
    finally:
        for lock in held:
            lock.release()


@contextmanager
def idle_host() -> Iterator[float]:
    """Hold the host alone (waits for running computations, blocks new ones); yields the seconds waited."""
    start = time.monotonic()
    with _host_lock().write_lock():
        yield time.monotonic() - start


def load_1m() -> float:
    """The 1-minute load average: how busy the host was around a measurement."""
    return os.getloadavg()[0]
