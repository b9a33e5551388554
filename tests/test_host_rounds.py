"""Host sessions like a phone's: rounds in fresh processes, warm-up before timing, the binding's cost per call timed
on a no-op program and taken off the row's latencies, intervals that hold across separate sessions."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from adb_bench import host
from adb_bench.host import BLOCK, HostDevice
from compress.formats.pte import export_pte
from compress.formats.ptl import export_ptl
from compress.pipeline import measured

SLOW_CALLS, SLOW_S, FAST_S = 3, 0.125, 2**-20  # the fake runtime's first calls in a process are slow (a cold
# runtime); binary fractions, so the virtual clock adds them exactly


class VirtualClock:
    """Time as the virtual runtime spends it (seconds): timings exact, whatever else the machine does."""

    now = 0.0

    def perf_counter(self) -> float:
        return self.now


def fake_runtime(log: Path, clock: VirtualClock):
    """A loader for `.fake` files: each call logs `pid file` and costs FAST_S on the virtual clock, the first
    SLOW_CALLS calls of each file in a process SLOW_S."""

    def load(path: str):
        calls = 0

        def forward(x):
            nonlocal calls
            calls += 1
            with log.open("a") as handle:
                handle.write(f"{os.getpid()} {Path(path).name}\n")
            clock.now += SLOW_S if calls <= SLOW_CALLS else FAST_S

        return forward

    return load


@pytest.fixture
def fake(monkeypatch, tmp_path):
    log, clock = tmp_path / "calls", VirtualClock()
    monkeypatch.setattr(host, "time", clock)
    monkeypatch.setitem(host.LOADERS, ".fake", fake_runtime(log, clock))
    monkeypatch.setattr(host, "noop_file", lambda suffix, shape: tmp_path / "noop.fake")
    files = [str(tmp_path / "a.fake"), str(tmp_path / "b.fake")]
    return log, files


def test_each_round_is_a_fresh_process_that_warms_up_before_it_times(fake):
    log, files = fake
    a, b = HostDevice(warmup=SLOW_CALLS, iters=10, rounds=4, min_time_s=0, memory=False).benchmark(files, [1, 3])
    calls = [line.split() for line in log.read_text().splitlines()]
    pids = list(dict.fromkeys(pid for pid, _ in calls))
    assert len(pids) == 4 and str(os.getpid()) not in pids  # one process per round, never this one
    for pid in pids:  # each round: warm-up and one block of each of the two files and the no-op
        assert sorted(name for p, name in calls if p == pid) == sorted(["a.fake", "b.fake", "noop.fake"] * (3 + BLOCK))
    assert a["round_sizes"] == b["round_sizes"] == [BLOCK] * 4
    assert max(a["samples_ms"] + b["samples_ms"]) < SLOW_S * 1e3  # the cold calls were the warm-up's
    # without warm-up, every round times its cold calls: the runtime is cold in each fresh process
    (cold,) = HostDevice(warmup=0, iters=4, rounds=4, min_time_s=0).benchmark(files[:1], [1, 3])
    assert sum(s >= SLOW_S * 1e3 for s in cold["samples_ms"]) == SLOW_CALLS * 4
    # rounds alternate the order of the files: a b noop, noop b a, ...
    firsts = [next(name for p, name in calls if p == pid) for pid in pids]
    assert firsts == ["a.fake", "noop.fake", "a.fake", "noop.fake"]


def test_rounds_must_fit_in_the_iterations():
    with pytest.raises(host.DeviceError, match=r"device.rounds=8 must be between 1 and device.iters=5"):
        HostDevice(iters=5, rounds=8)


def test_a_failing_round_is_one_line(fake, tmp_path):
    _, files = fake
    with pytest.raises(host.DeviceError, match=r"^host benchmark: KeyError: '.nope'$"):
        HostDevice(warmup=0, iters=1, rounds=1, min_time_s=0).benchmark([*files, str(tmp_path / "c.nope")], [1, 3])


@pytest.mark.parametrize("suffix", [".ptl", ".pte"])
def test_the_no_op_program_times_the_runtime_call_and_is_cheaper_than_a_model(lenet, tmp_path, suffix):
    path = tmp_path / f"lenet{suffix}"
    (export_ptl if suffix == ".ptl" else export_pte)(lenet, torch.zeros(1, 1, 28, 28), path)
    noop = host.noop_file(suffix, [1, 1, 28, 28])
    assert noop.suffix == suffix and host.noop_file(suffix, [1, 1, 28, 28]) == noop  # built once
    (timed,) = HostDevice(warmup=20, iters=100, rounds=2, min_time_s=0).benchmark([str(path)], [1, 1, 28, 28])
    assert 0 < timed["call_overhead_ms"] < sorted(timed["samples_ms"])[len(timed["samples_ms"]) // 2]


def test_the_row_is_net_of_the_call_cost_and_keeps_the_raw_p50():
    spread = [1 + 0.01 * (k % 5 - 2) for k in range(40)]
    session = {
        "reference": {"samples_ms": [10 * s for s in spread], "round_sizes": [20, 20], "call_overhead_ms": 1.0},
        "variant": {"samples_ms": [4 * s for s in spread], "round_sizes": [20, 20], "call_overhead_ms": 1.0},
        "host_load_1m": 0.0, "bench_s": 1.0,
    }  # fmt: skip
    files = {"size_bytes": 100, "acc_top1": 0.9, "macs": 10, "nonzero_params": 10}
    row = measured(files, files, session)
    assert row["latency_ms_p50_raw"] == pytest.approx(4.0) and row["call_overhead_ms"] == 1.0
    assert row["latency_ms_p50"] == pytest.approx(3.0) and row["ref_latency_ms_p50"] == pytest.approx(9.0)
    assert row["speedup_x"] == pytest.approx(3.0) and row["speedup_x_lo"] <= 3.0 <= row["speedup_x_hi"]
    assert "samples_ms" not in row and "round_sizes" not in row and "raw, not net" not in row["notes"]
    # a model that costs no more than two calls of the no-op: too small to net out; raw figures, said in notes
    session["variant"] |= {"samples_ms": [1.5 * s for s in spread]}
    row = measured(files, files, session)
    assert row["latency_ms_p50"] == pytest.approx(1.5) and row["speedup_x"] == pytest.approx(10 / 1.5)
    assert "latencies are raw, not net of the runtime's cost per call (1000.0 µs)" in row["notes"]


def virtual_runtime(clock: VirtualClock, costs: dict[str, float], processes: Path):
    """A loader whose forward costs `costs[file name]` seconds, times a level drawn per process (its machine
    state, shared by its files: 10%) and per file and process (where its memory landed: 5%), with 2% noise per
    call: what separate processes do to real timings. Processes are numbered in the order they load (`processes`
    lists their pids), so the draws are the same on every run."""

    def load(path: str):
        name, pids = Path(path).name, processes.read_text().split() if processes.exists() else []
        if str(os.getpid()) not in pids:
            pids.append(str(os.getpid()))
            processes.write_text(" ".join(pids))
        number = pids.index(str(os.getpid()))
        process, own = (np.random.default_rng([number, k]) for k in (0, zlib.crc32(name.encode())))
        level = costs[name] * process.lognormal(0, 0.1) * own.lognormal(0, 0.05)

        def forward(x):
            clock.now += level * own.lognormal(0, 0.02)

        return forward

    return load


def test_the_speedup_interval_of_rounds_holds_the_speedups_of_separate_sessions(monkeypatch, tmp_path):
    """Twelve sessions of the same pair (2x apart) on a runtime whose processes land on different levels: each
    session's interval, which bootstraps over its rounds, holds the speedups most other sessions measured; with
    one process per session (the host before rounds) almost none."""
    clock = VirtualClock()
    costs = {"ref.fake": 1e-3, "half.fake": 0.5e-3, "noop.fake": 1e-6}
    monkeypatch.setattr(host, "time", clock)
    monkeypatch.setitem(host.LOADERS, ".fake", virtual_runtime(clock, costs, tmp_path / "processes"))
    monkeypatch.setattr(host, "noop_file", lambda suffix, shape: tmp_path / "noop.fake")
    held = {}
    for rounds in (5, 1):
        device = HostDevice(warmup=2, iters=100, rounds=rounds, min_time_s=0, memory=False)
        rows = [measured_pair(device, tmp_path / "ref.fake", tmp_path / "half.fake") for _ in range(12)]
        assert all(1.6 < s < 2.5 for s, _, _ in rows)
        held[rounds] = np.mean([lo <= other <= hi for i, (_, lo, hi) in enumerate(rows)
                                for j, (other, _, _) in enumerate(rows) if i != j])  # fmt: skip
    assert held[5] >= 0.8  # 0.87
    assert held[1] < 0.5  # one process per session: its interval is blind to the process's level
def measured_pair(device: HostDevice, ref: Path, var: Path) -> tuple[float, float, float]:
    reference, variant = device.benchmark([str(ref), str(var)], [1, 1, 28, 28])
    files = {"size_bytes": 1, "acc_top1": 1.0, "macs": 1, "nonzero_params": 1}
    row = measured(files, files, {"reference": reference, "variant": variant, "host_load_1m": 0, "bench_s": 0})
    return row["speedup_x"], row["speedup_x_lo"], row["speedup_x_hi"]
