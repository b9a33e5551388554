"""The host's CPU in the benchmark identity and the row: model and kernel-relevant ISA features parsed from real
/proc/cpuinfo texts; other processes' CPU time during a session from /proc/stat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from adb_bench.cpu import CpuClock, cpu_features, cpu_model, machine_busy_s, other_cpu, this_cpu
from adb_bench.host import HostDevice
from compress.flags import flags_column, row_flags
from compress.report import report_blocks

DATA = Path(__file__).parent / "data"


def test_x86_cpuinfo_gives_the_model_and_its_vector_features():
    text = (DATA / "cpuinfo_x86_amd_epyc.txt").read_text()  # this project's CI host: AVX2, no AVX-512
    assert cpu_model(text) == "AMD EPYC"
    assert cpu_features(text) == "avx avx2 fma f16c"


def test_x86_flags_with_avx512_vnni_and_amx_are_listed_in_a_fixed_order():
    text = (DATA / "cpuinfo_x86_amd_epyc.txt").read_text()
    text = text.replace(" fsrm\n", " fsrm amx_int8 avx512f avx512_vnni amx_tile avx512bw\n", 1)
    assert cpu_features(text) == "avx avx2 fma f16c avx512f avx512bw avx512_vnni amx_tile amx_int8"


def test_arm64_cpuinfo_has_no_model_name_so_the_part_names_it():
    text = (DATA / "cpuinfo_arm64_neoverse_v1.txt").read_text()
    assert cpu_model(text) == "ARM part 0xd40"
    assert cpu_features(text) == "asimd asimdhp asimddp i8mm bf16 sve svei8mm"
    assert cpu_model("processor\t: 0\nHardware\t: BCM2835\n") == "BCM2835" and cpu_model("") is None


STAT = "cpu  {user} 0 {system} {idle} 12 0 {softirq} {steal} 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\nintr 7\n"


def clock(user: int, system: int, idle: int, own_s: float, wall_s: float, steal: int = 0) -> CpuClock:
    """A reading from /proc/stat text (ticks of 1/SC_CLK_TCK s) and this process's own clocks."""
    text = STAT.format(user=user, system=system, idle=idle, softirq=5, steal=steal)
    return CpuClock(machine_busy_s(text), own_s, wall_s)


def test_proc_stat_busy_time_is_user_nice_system_irq_softirq_not_idle_iowait_or_steal():
    tick = os.sysconf("SC_CLK_TCK")
    assert machine_busy_s(STAT.format(user=100, system=50, idle=900, softirq=5, steal=70)) == pytest.approx(155 / tick)


def test_an_idle_host_has_no_other_cpu_whatever_this_process_used():
    tick = os.sysconf("SC_CLK_TCK")
    start = clock(1000, 200, 5000, own_s=3.0, wall_s=10.0)
    # 2 s of wall time; this process (with its children) used 1.5 s: all the busy time the machine had
    end = clock(1000 + int(1.2 * tick), 200 + int(0.3 * tick), 5000 + int(2.5 * tick), own_s=4.5, wall_s=12.0,
                steal=int(0.4 * tick))  # fmt: skip
    assert other_cpu(start, end) == pytest.approx(0.0)
    # the same, with another process busy for 1.6 s of the 2: 0.8 cores busy elsewhere, over the flag's threshold
    busy = clock(1000 + int(2.8 * tick), 200 + int(0.3 * tick), 5000 + int(0.9 * tick), own_s=4.5, wall_s=12.0)
    assert other_cpu(start, busy) == pytest.approx(0.8)
    assert row_flags({"status": "ok", "technique": "none", "host_other_cpu": 0.0}) == []
    assert row_flags({"status": "ok", "technique": "none", "host_other_cpu": 0.8}) == ["busy_host"]
    assert other_cpu(None, end) is None and other_cpu(end, start) is None


def tiny_ptl(path: Path) -> str:
    torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))._save_for_lite_interpreter(
        str(path)
    )
    return str(path)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a core for the busy process beside the benchmark")
def test_a_busy_core_beside_a_host_session_raises_host_other_cpu_and_the_busy_host_flag(tmp_path):
    file = tiny_ptl(tmp_path / "m.ptl")
    device = HostDevice(warmup=1, iters=20, min_time_s=0.5)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        (loaded,) = device.benchmark([file], [1, 1, 28, 28])
    finally:
        busy.kill()
        busy.wait()
    # the busy process is always runnable: every core not timing is busy elsewhere (≥ 1 of 2), far above 0.25
    assert loaded["host_other_cpu"] > 0.6
    assert "busy_host" in row_flags(CLEAN_ROW | {"host_other_cpu": loaded["host_other_cpu"]})
    assert {loaded["cpu_model"], loaded["cpu_features"]} == set(this_cpu().values())
    assert {k: device.identity()[k] for k in ("cpu_model", "cpu_features")} == this_cpu()


CLEAN_ROW = {"status": "ok", "technique": "prune_channel", "speedup_x": 2.0, "speedup_x_lo": 1.9, "speedup_x_hi": 2.1}


def test_the_report_lists_the_rows_timed_on_a_busy_host():
    rows = [CLEAN_ROW | {"model": "lenet5", "dataset": "mnist5k", "device": "host", "format": "ptl", "ratio": 0.5,
                         "latency_ms_p50": 0.2, "acc_top1": 0.97, "acc_delta": 0.0, "size_gzip_bytes": 9e4,
                         "size_bytes": 2e5, "host_other_cpu": cores} for cores in (0.01, 0.9)]  # fmt: skip
    table = pd.DataFrame(rows)
    table["flags"] = flags_column(table)
    blocks = report_blocks(table, plots={})
    [busy] = [block[1] for block in blocks if block[0] == "table" and block[2] == "busy"]
    assert list(busy["host_other_cpu"]) == ["0.9"] and list(table["flags"]) == ["", "busy_host"]
    assert any(line.startswith("busy_host (1 rows): other processes kept") for b in blocks if b[0] == "list"
               for line in b[1])  # fmt: skip
