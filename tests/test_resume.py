"""What a killed sweep leaves behind and how a re-run resumes it; the machine's shared locks (compute slots, GPU
slots, the idle-host lock) held by separate processes; `limits.wait_s` for a stage another job holds."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT
from filelock import FileLock, Timeout

from compress import cache, machine, pipeline
from compress.errors import UserError

FORK = multiprocessing.get_context("fork")
ALL_CPUS = len(os.sched_getaffinity(0))


def _hold(enter, entered, leave) -> None:
    """In a child: enter the context `enter()`, say so, stay until told to leave."""
    with enter():
        entered.set()
        leave.wait(60)


def holder(enter):
    """A child process holding `enter()` until its `leave` event is set: (process, entered, leave)."""
    entered, leave = FORK.Event(), FORK.Event()
    process = FORK.Process(target=_hold, args=(enter, entered, leave))
    process.start()
    assert entered.wait(30)
    return process, entered, leave


@pytest.fixture
def locks(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "LOCK_DIR", tmp_path / "locks")  # forks see it too


@pytest.mark.parametrize(
    ("first", "second", "blocks"),
    [
        (lambda: machine.computing(ALL_CPUS), lambda: machine.computing(1), True),  # no CPU left
        (lambda: machine.idle_host(), lambda: machine.computing(1), True),  # the host is being timed
        (lambda: machine.computing(1), lambda: machine.idle_host(), True),  # a computation runs
        (lambda: machine.computing(1, ["0"], 1), lambda: machine.computing(1, ["0"], 1), True),  # one GPU slot
        (lambda: machine.computing(1, ["0"], 2), lambda: machine.computing(1, ["0"], 2), ALL_CPUS < 2),  # two
    ],
    ids=["cpus", "idle-host-first", "compute-first", "one-gpu-slot", "two-gpu-slots"],
)
def test_a_second_process_waits_exactly_while_the_first_holds_what_it_needs(locks, first, second, blocks):
    process, _, leave = holder(first)
    entered, other_leave = FORK.Event(), FORK.Event()
    waiting = FORK.Process(target=_hold, args=(second, entered, other_leave))
    waiting.start()
    try:
        assert entered.wait(2 if blocks else 30) is not blocks  # never enters while the first holds
        leave.set()
        assert entered.wait(30)  # and enters once it let go
    finally:
        for event, child in ((leave, process), (other_leave, waiting)):
            event.set()
            child.join(30)


def test_a_gpu_slot_makes_its_gpu_the_only_visible_one(locks, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    process, _, leave = holder(lambda: machine.computing(1, ["0"], 1))  # GPU 0's only slot is taken
    try:
        with machine.computing(1, ["0", "1"], 1):
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    finally:
        leave.set()
        process.join(30)


def test_limits_wait_s_expires_into_a_one_line_error_and_a_rerun_computes(make_cfg, tmp_path):
    entry = tmp_path / "stage.json"
    cfg = make_cfg("limits.wait_s=0.5")
    process, _, leave = holder(lambda: cache.entry_lock(entry, 60))  # another job computes the entry

    def work() -> None:
        cache.write_json(entry, {"done": True})

    def stage():
        return pipeline.once("benchmark", entry, lambda: cache.read_json(entry), work, cfg,
                             lambda: contextlib.nullcontext(0.0))  # fmt: skip

    try:
        with pytest.raises(UserError, match=r"waited 0.5 s for another job computing .*raise limits.wait_s"):
            stage()
    finally:
        leave.set()
        process.join(30)
    done = stage()  # the holder died without writing it: this job computes it
    assert (done.source, done.value) == ("computed", {"done": True})


SWEEP = ["-m", "technique=none,prune_magnitude", "ratio=0.5", "train.epochs=2", "finetune.epochs=1",
         "device.iters=5", "device.warmup=1", "device.min_time_s=0", "device.rounds=1"]  # fmt: skip


def sweep(tmp_path: Path, name: str) -> subprocess.Popen:
    env = os.environ | {"HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, str(ROOT / "cli.py"), *SWEEP, f"cache_dir={tmp_path / 'cache'}",
               f"hydra.sweep.dir={tmp_path / name}"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def held(path: Path) -> bool:
    lock = FileLock(path, blocking=False)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before the moment to kill it"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_a_sweep_killed_while_a_lock_is_held_and_a_variant_half_written_resumes(tmp_path):
    cache_dir = tmp_path / "cache"
    # 1. killed while training the base model: its entry's lock is held
    kill_when(sweep(tmp_path, "killed-1"), lambda: any(held(p) for p in cache_dir.glob("base/*.lock")))
    assert not list(cache_dir.glob("base/*.pt"))
    # 2. killed while a variant's folder is being written (its file there, its metrics.json not yet)
    half = lambda: any(not (f / "metrics.json").exists() and any(f.iterdir()) for f in cache_dir.glob("variants/*/"))  # noqa: E731
    kill_when(sweep(tmp_path, "killed-2"), half)
    # 3. the re-run resumes: no stale lock stops it, the half-written variant is made again, one row per variant
    proc = sweep(tmp_path, "resumed")
    assert proc.wait(600) == 0
    table = pd.read_csv(tmp_path / "resumed" / "summary.csv")
    assert sorted(table["technique"]) == ["none", "prune_magnitude"] and set(table["status"]) == {"ok"}
    assert table["base_from"].tolist() == ["cache", "cache"]  # the base trained by the second try survived
    assert all((f / "metrics.json").exists() for f in cache_dir.glob("variants/*/"))
    assert not any(held(p) for p in cache_dir.rglob("*.lock"))
