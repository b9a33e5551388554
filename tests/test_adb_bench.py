"""AdbDevice through the real adb client on emulated phones running the speed_benchmark_torch stand-in."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from adb_emulator.harness import adb_device, attached_phone
from adb_emulator.phone import make_fake_binary
from torch.jit.mobile import _get_model_bytecode_version

from adb_bench.errors import DeviceError
from compress.export import export_ptl, load_ptl

SHAPE = [1, 1, 8, 8]


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    return make_fake_binary(tmp_path_factory.mktemp("bin") / "speed_benchmark_torch")


def tiny_model(path: Path, bytecode_version: int | None = None) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(72, 3))
    export_ptl(net, torch.randn(*SHAPE), path, optimize=False, bytecode_version=bytecode_version)
    return path


def pwned(phone) -> list[Path]:
    return list(phone.root.rglob("pwned*"))


@pytest.mark.parametrize("shell_v2", [True, False], ids=["shell_v2", "no_shell_v2"])
def test_injection_in_settings_runs_nothing_else(server, binary, tmp_path, shell_v2):
    hostile = {
        "extra_args": ["--iter=3; touch pwned1", "--warmup=$(touch pwned2)"],
        "remote_dir": "/data/local/tmp/pb dir; touch pwned3 #",
    }
    with attached_phone(server, tmp_path / "phone", shell_v2=shell_v2) as phone:
        device = adb_device(server, phone, binary, **hostile)
        with pytest.raises(DeviceError, match="rejected its flags"):  # exit 1 seen even without shell v2
            device.benchmark(str(tiny_model(tmp_path / "m.ptl")), SHAPE)
        assert not pwned(phone)
        assert phone.local(hostile["remote_dir"] + "/speed_benchmark_torch").is_file()


def test_unknown_flag(server, phone, binary, tmp_path):
    device = adb_device(server, phone, binary, extra_args=["--threads=4"])
    with pytest.raises(DeviceError, match="rejected its flags .*Failed to parse command line flags!"):
        device.benchmark(str(tiny_model(tmp_path / "m.ptl")), SHAPE)


@pytest.mark.parametrize(("binary_path", "message"), [(None, "device.binary is not set"), ("/no/sbt", "not found")])
def test_binary_missing(server, phone, binary_path, message):
    with pytest.raises(DeviceError, match=message):
        adb_device(server, phone, binary_path).identity()


def test_binary_of_the_wrong_abi(server, phone, tmp_path):
    elf = tmp_path / "speed_benchmark_torch"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\xb7\x00")  # an aarch64 header, nothing more
    with pytest.raises(DeviceError, match="cannot run on this phone"):
        adb_device(server, phone, elf).benchmark(str(tiny_model(tmp_path / "m.ptl")), SHAPE)


def test_timeout_stops_the_remote_run(server, phone, binary, tmp_path):
    (phone.root / "hang").touch()
    device = adb_device(server, phone, binary, timeout_s=2)
    with pytest.raises(DeviceError, match=r"timed out after 2s \(device.timeout_s\)"):
        device.benchmark(str(tiny_model(tmp_path / "m.ptl")), SHAPE)
    pid = int((phone.root / "runs.log").read_text().split()[1])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.slow
def test_model_rejected_suggests_the_backport_option(server, phone, tmp_path):
    old_binary = make_fake_binary(tmp_path / "speed_benchmark_torch", max_bytecode=7)
    model = tiny_model(tmp_path / "m.ptl")
    with pytest.raises(DeviceError, match="bytecode version .* export.bytecode_version=7"):
        adb_device(server, phone, old_binary).benchmark(str(model), SHAPE)
    backported = tiny_model(tmp_path / "m7.ptl", bytecode_version=7)
    assert _get_model_bytecode_version(str(backported)) == 7
    assert load_ptl(backported)(torch.ones(*SHAPE)).shape == (1, 3)


@pytest.mark.slow
def test_two_benchmarks_on_one_phone_run_one_after_the_other(server, phone, binary, tmp_path):
    """Rows with the phone's fingerprint, a hostile local path, the binary pushed once, and the per-serial lock."""
    (phone.root / "slow").write_text("0.5")  # long runs: without the lock the two would overlap
    folder = tmp_path / "dir; touch pwned1"
    folder.mkdir()
    model, rows, errors = tiny_model(folder / "m'$(touch pwned2).ptl"), [], []

    def bench() -> None:
        try:
            rows.append(adb_device(server, phone, binary).benchmark(str(model), SHAPE))
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=bench) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(rows) == 2
    events = (phone.root / "runs.log").read_text().split()
    assert events[0::2] == ["start", "end", "start", "end"]
    assert events[1] == events[3] != events[5] == events[7]  # each run ended before the other started
    for row in rows:
        assert row["iters"] == 3 and 0 < row["latency_ms_min"] <= row["latency_ms_p50"] <= row["latency_ms_p90"]
        assert row["latency_source"] == "observer" and row["device"] == "adb:Pixel Emu"
        fingerprint = [row[k] for k in ("device_serial", "device_soc", "device_board", "device_abi", "android")]
        assert fingerprint == [phone.serial, "EMU8450", "emu8450", "arm64-v8a", "14"]
        assert (row["battery_temp_c_before"], row["battery_temp_c_after"]) == (31.2, 31.2)
    remote = phone.local("/data/local/tmp/pocketbench")
    assert [p.name for p in remote.iterdir()] == ["speed_benchmark_torch"]  # run dirs removed
    assert sum(c.startswith("chmod") for c in phone.commands) == 1  # the same binary is not pushed twice
    assert not pwned(phone)
