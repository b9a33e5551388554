"""Peak memory at run time: the benchmark process's high-water mark on the host (net of the runtime's) and on the
phone (read by the session's wrapper from the running binary's /proc/PID/status), and what a .pte plans before it
runs (its memory-planned buffers, its weights)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from adb_emulator.harness import adb_device, attached_phone
from adb_emulator.phone import make_fake_binary
from conftest import fast_host, tiny_cfg
from torch import nn

from adb_bench.memory import high_water_kb
from adb_bench.session import FileRuns
from compress import pipeline
from compress.formats.pte import export_pte, planned_memory
from compress.formats.ptl import export_ptl

STATUS = "Name:\tspeed_benchmark\nVmPeak:\t  123456 kB\nVmHWM:\t   45678 kB\nVmRSS:\t   40000 kB\n"


def test_the_high_water_mark_is_read_from_a_status_text_and_absent_where_the_kernel_shows_none():
    assert high_water_kb(STATUS) == 45678
    assert high_water_kb("Name:\tkthreadd\nState:\tS (sleeping)\n") is None  # kernel threads have no VmHWM
    assert high_water_kb("") is None  # the wrapper found no /proc/PID/status
    assert high_water_kb("VmHWM: 900 kB\nVmHWM: 4200 kB\n") == 4200  # the wrapper's lines: the mark as it grew


def net(width: int) -> nn.Module:
    """Three 3×3 convolutions of `width` channels: twice the width, four times the weights."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    ).eval()  # fmt: skip


# small: 32 channels on 32×32; large: 64 channels on 64×64 (4× the weights, 8× the activations)
SIZES = {"small": (32, 32), "large": (64, 64)}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[tuple[str, str], Path]:
    torch.manual_seed(0)
    folder, out = tmp_path_factory.mktemp("memory"), {}
    for name, (width, side) in SIZES.items():
        example = torch.randn(1, 3, side, side)
        export_ptl(net(width), example, folder / f"{name}.ptl")
        export_pte(net(width), example, folder / f"{name}.pte")
        out |= {(name, "ptl"): folder / f"{name}.ptl", (name, "pte"): folder / f"{name}.pte"}
    return out


def shape(name: str) -> list[int]:
    return [1, 3, SIZES[name][1], SIZES[name][1]]


@pytest.mark.parametrize("fmt", ["ptl", "pte"])
def test_on_the_host_a_larger_model_holds_clearly_more_memory(files, fmt):
    peaks = {n: fast_host().benchmark([str(files[n, fmt])], shape(n))[0]["mem_peak_mb"] for n in SIZES}
    assert peaks["small"] > 0 and peaks["large"] > peaks["small"] + 0.5, peaks  # the large one's activations: 1 MB each
    assert fast_host(memory=False).benchmark([str(files["small", fmt])], shape("small"))[0]["mem_peak_mb"] is None


def test_a_pte_plans_its_inputs_and_outputs_and_holds_its_weights(files):
    small, large = (planned_memory(files[n, "pte"].read_bytes()) for n in ("small", "large"))
    assert large["mem_planned_kb"] == pytest.approx(4 * small["mem_planned_kb"], rel=0.05)  # 4× the input's pixels
    weights = {n: sum(p.numel() for p in net(SIZES[n][0]).parameters()) * 4 / 1024 for n in SIZES}  # fp32, KB
    assert small["mem_weights_kb"] == pytest.approx(weights["small"], rel=0.02)
    assert large["mem_weights_kb"] == pytest.approx(weights["large"], rel=0.02)


@pytest.mark.slow
def test_an_int8_pte_holds_about_a_quarter_of_its_fp32_twins_weights(make_cfg):
    rows = {}
    for technique in ("none", "quant_static"):
        rows[technique] = {}
        pipeline.run_variant(tiny_cfg(make_cfg, "lenet5", technique, "export=pte"), fast_host(), rows[technique])
    fp32, int8 = rows["none"], rows["quant_static"]
    assert int8["status"] == fp32["status"] == "ok"
    assert 0.22 < int8["mem_weights_kb"] / fp32["mem_weights_kb"] < 0.32  # int8 weights, int32 biases, scales
    assert fp32["mem_peak_mb"] > 0 and not math.isnan(int8["mem_peak_mb"])


@pytest.mark.slow
def test_on_the_phone_the_wrapper_reads_the_running_binarys_high_water_mark(server, tmp_path, files):
    binary = make_fake_binary(tmp_path / "speed_benchmark_torch")
    with attached_phone(server, tmp_path / "phone", zygote=None) as phone:  # the stand-in runs the file itself
        device = adb_device(server, phone, binary, energy={"enabled": False})
        device.attach()
        peaks = {n: device.benchmark([str(files[n, "ptl"])], shape(n))[0]["mem_peak_mb"] for n in SIZES}
    assert peaks["small"] > 10  # the whole process: here a Python that imported torch, on a phone the C++ binary
    assert peaks["large"] > peaks["small"] + 0.5, peaks


def test_a_phone_whose_proc_hides_the_high_water_mark_leaves_the_column_empty_with_a_note(server, phone, tmp_path):
    device = adb_device(server, phone, make_fake_binary(tmp_path / "speed_benchmark_torch"))
    row = device._row(FileRuns(samples_us=[1000.0], round_sizes=[1]), "/m.ptl", "", None, [])
    assert row["mem_peak_mb"] is None and row["notes"] == [
        "mem_peak_mb: no VmHWM was read from the benchmark's /proc/PID/status (hidden on this phone?)"]
