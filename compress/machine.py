"""This machine's shared resources, coordinated across every job of every sweep running on it: its CPUs (a job
computes holding `threads` of them, so parallel launchers never oversubscribe the machine), its GPUs (a stage that
trains on CUDA holds one of `train.jobs_per_gpu` slots of one GPU) and the idle-host lock
that a host benchmark holds (no job computes and no other benchmark runs while it times)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
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


def _acquired(names: list[str], count: int) -> list[FileLock] | None:
    """`count` of the locks `names` (a CPU's, a GPU slot's) if that many are free now (held), else None (none
    held)."""
    held: list[FileLock] = []
    for name in names:
        lock = FileLock(LOCK_DIR / f"{name}.lock", blocking=False)
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


def _gpu_slot(gpus: Sequence[str], per_gpu: int) -> tuple[str, FileLock] | None:
    """A free slot (one of `per_gpu` locks per GPU id) of the first GPU of `gpus` that has one, held; else None."""
    for gpu in gpus:
        held = _acquired([f"gpu-{gpu.replace('/', '_')}-{slot}" for slot in range(per_gpu)], 1)  # MIG ids hold /
        if held:
            return gpu, held[0]
    return None


@contextmanager
def _visible(gpu: str | None) -> Iterator[None]:
    """CUDA_VISIBLE_DEVICES=`gpu` for the block (a stage forked in it sees that GPU alone, as cuda:0)."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        yield
    finally:
        if gpu is not None and before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES")
        elif gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


@contextmanager
def computing(threads: int, gpus: Sequence[str] = (), per_gpu: int = 1) -> Iterator[float]:
    """Hold `threads` of this process's CPUs (a lock per CPU id, shared by every job on the machine, so jobs with
    other cpusets or thread counts count right), with `gpus` (the ids the stage may train on) one slot of a free
    GPU made the only visible one, and a share of the host; yields the seconds waited. The CPUs and the GPU come
    first (the GPU before the CPUs), so a job waiting for them holds back neither a benchmark nor a CPU stage."""
    start = time.monotonic()
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    while gpus and (slot := _gpu_slot(gpus, per_gpu)) is None:
        time.sleep(POLL_S)
    gpu, gpu_lock = slot if gpus else (None, None)
    while (held := _acquired([f"cpu-{c}" for c in cpus], min(max(threads, 1), len(cpus)))) is None:
        time.sleep(POLL_S)
    try:
        with _visible(gpu), _host_lock().read_lock():
            yield time.monotonic() - start
    finally:
        for lock in [*held, *([gpu_lock] if gpu_lock else [])]:
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
