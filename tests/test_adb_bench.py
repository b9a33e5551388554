"""AdbDevice through the real adb client on emulated phones running the speed_benchmark_torch stand-in: every exit
path of the binary, device.push_libs, interleaved sessions, the per-serial lock, a pool of phones, energy."""

from __future__ import annotations

import re
import statistics
import threading
from pathlib import Path

import pytest
import torch
from adb_emulator.harness import adb_device, attached_phone
from adb_emulator.phone import make_fake_binary
from torch.jit.mobile import _get_model_bytecode_version

from adb_bench.errors import DeviceError
from adb_bench.transport import Adb
from compress.formats.ptl import export_ptl, load_ptl

SHAPE = [1, 1, 8, 8]
ON_USB = ("energy not measured: the phone is powered by usb and charging; use Wi-Fi adb and unplug it "
          "(README: energy per inference)")  # fmt: skip


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    return make_fake_binary(tmp_path_factory.mktemp("bin") / "speed_benchmark_torch")


def tiny_model(path: Path, bytecode_version: int | None = None, channels: int = 2) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, channels, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(36 * channels, 3))  # fmt: skip
    export_ptl(net, torch.randn(*SHAPE), path, optimize=False, bytecode_version=bytecode_version)
    return path


def pwned(phone) -> list[Path]:
    return list(phone.root.rglob("pwned*"))


def runs_of(phone) -> list[str]:
    return [c for c in phone.commands if "--model=" in c]


@pytest.mark.parametrize("shell_v2", [True, False], ids=["shell_v2", "no_shell_v2"])
def test_injection_in_settings_runs_nothing_else(server, binary, tmp_path, shell_v2):
    hostile = {
        "extra_args": ["--iter=3; touch pwned1", "--warmup=$(touch pwned2)", "--bogus=`touch pwned4`"],
        "remote_dir": "/data/local/tmp/pb dir; touch pwned3 #",
    }
    with attached_phone(server, tmp_path / "phone", shell_v2=shell_v2) as phone:
        device = adb_device(server, phone, binary, **hostile)
        with pytest.raises(DeviceError) as info:  # the exit code is seen even without shell v2
            device.benchmark([str(tiny_model(tmp_path / "m.ptl"))], SHAPE)
        assert str(info.value).startswith("speed_benchmark_torch has no flag --bogus=`touch pwned4`: remove it")
        assert not pwned(phone)
        assert phone.local(hostile["remote_dir"] + "/speed_benchmark_torch").is_file()


@pytest.mark.parametrize(("binary_path", "message"),
                         [(None, "device.binary, device.et_runner and device.tflite_runner are not set"),
                          ("/no/sbt", "not found")])
def test_binary_missing(server, phone, binary_path, message):
    with pytest.raises(DeviceError, match=message):
        adb_device(server, phone, binary_path).attach()


def test_binary_of_the_wrong_abi(server, phone, tmp_path):
    elf = tmp_path / "speed_benchmark_torch"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\xb7\x00")  # an aarch64 header, nothing more
    with pytest.raises(DeviceError, match="speed_benchmark_torch is built for another CPU .*ANDROID_ABI"):
        adb_device(server, phone, elf).benchmark([str(tiny_model(tmp_path / "m.ptl"))], SHAPE)


def test_timeout_stops_the_remote_run(server, phone, binary, tmp_path):
    (phone.root / "hang").touch()
    device = adb_device(server, phone, binary, timeout_s=2)
    with pytest.raises(DeviceError, match=r"timed out after 2s \(device.timeout_s\)"):
        device.benchmark([str(tiny_model(tmp_path / "m.ptl"))], SHAPE)
    pid = int((phone.root / "runs.log").read_text().split()[1])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


INPUT_HINT = "; set device.input_type to what the model takes (float for float and int8 models)"


@pytest.mark.parametrize(
    ("settings", "dialect", "fault", "expected"),
    [
        ({"extra_args": ["--report_pep"]}, "android", None,
         "speed_benchmark_torch flag --report_pep needs a value: write --report_pep=true in device.extra_args"),
        ({"extra_args": ["--print_output", "--warmup=2"]}, "android", None,
         "speed_benchmark_torch flag --print_output took '--warmup=2' as its value: write --print_output=true (bool "
         "flags need =true/=false) in device.extra_args"),
        ({"input_type": "double"}, "android", None,
         "speed_benchmark_torch stopped on c10::Error: Unsupported input type: double" + INPUT_HINT),
        ({"extra_args": ["--input_dims=1,x"]}, "host", None, "speed_benchmark_torch stopped on std::invalid_argument: "
         "stoi; check --input_dims/--input_type/--input_memory_format in device.extra_args"),
        ({"input_type": "int64"}, "android", None,
         "speed_benchmark_torch stopped on c10::Error: expected scalar type Long but found Float" + INPUT_HINT),
        ({}, "host", "segv_in_main", "speed_benchmark_torch crashed (Segmentation fault, exit 139)"),
        ({}, "android", "segv_at_exit", "speed_benchmark_torch printed a result, then crashed on exit (Segmentation "
         "fault, exit 139): the run is not trusted; rerun it"),
        ({"extra_args": ["--iter=0"]}, "android", None, "speed_benchmark_torch ran no timed iteration (Microseconds "
         "per iter: inf): set device.iters to at least device.rounds"),
    ],
    ids=["bare-flag", "flag-swallowed", "input-type", "stoi-host", "int64-abort", "segv-main", "segv-exit", "iter0"],
)  # fmt: skip
def test_each_exit_path_of_the_binary_is_one_line(server, phone, tmp_path, settings, dialect, fault, expected):
    sbt = make_fake_binary(tmp_path / "speed_benchmark_torch", dialect=dialect)
    if fault:
        (phone.root / fault).touch()
    with pytest.raises(DeviceError) as info:
        adb_device(server, phone, sbt, **settings).benchmark([str(tiny_model(tmp_path / "m.ptl"))], SHAPE)
    assert str(info.value) == expected


def test_missing_shared_stl_is_named_and_push_libs_fixes_it(server, phone, tmp_path):
    sbt = make_fake_binary(tmp_path / "speed_benchmark_torch", needs=["libc++_shared.so"])
    model = str(tiny_model(tmp_path / "m.ptl"))
    with pytest.raises(DeviceError) as info:
        adb_device(server, phone, sbt).benchmark([model], SHAPE)
    assert str(info.value) == (
        "speed_benchmark_torch needs libc++_shared.so, which the phone does not have: add "
        "device.push_libs=[/path/to/libc++_shared.so] (the one from the NDK that built it)"
    )
    lib = tmp_path / "ndk" / "libc++_shared.so"
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF shared STL")
    [row] = adb_device(server, phone, sbt, push_libs=[str(lib)]).benchmark([model], SHAPE)
    assert len(row["samples_ms"]) == 3 and row["notes"] == [ON_USB]
    assert phone.local("/data/local/tmp/pocketbench/libc++_shared.so").read_bytes() == lib.read_bytes()
    with pytest.raises(DeviceError, match=r"device.push_libs: '/no/libc\+\+_shared.so' does not exist"):
        adb_device(server, phone, sbt, push_libs=["/no/libc++_shared.so"]).attach()


@pytest.mark.slow
def test_model_rejected_suggests_the_backport_option(server, phone, tmp_path):
    old_binary = make_fake_binary(tmp_path / "speed_benchmark_torch", max_bytecode=7)
    model = tiny_model(tmp_path / "m.ptl")
    with pytest.raises(DeviceError, match="bytecode is newer than the binary reads: export with export.bytecode_vers"):
        adb_device(server, phone, old_binary).benchmark([str(model)], SHAPE)
    backported = tiny_model(tmp_path / "m7.ptl", bytecode_version=7)
    assert _get_model_bytecode_version(str(backported)) == 7
    assert load_ptl(backported)(torch.ones(*SHAPE)).shape == (1, 3)


def assert_load_readings(row: dict, idle_w: float, load_w: float, at_least: int) -> None:
    """`power_w_mean` is the mean of the run's readings, each at the idle or the load power: a whole number of them,
    at least `at_least`, read at the load."""
    at_load = (row["power_w_mean"] - idle_w) / (load_w - idle_w) * row["power_samples"]
    assert at_least <= round(at_load) <= row["power_samples"] and at_load == pytest.approx(round(at_load), abs=1e-6)


@pytest.mark.slow
def test_a_session_interleaves_files_and_measures_energy_on_battery(server, phone, binary, tmp_path):
    """Two files × 2 rounds of 2 iterations: A B B A, each pushed once; on battery with a gauge that reports
    negative milliamps: idle 450 mA × 4 V = 1.8 W, running 1450 mA × 4 V = 5.8 W."""
    phone.set_battery(295, usb=False)
    phone.set_power(idle_current=-450, load_current=-1450, voltage=4000)
    (phone.root / "load_reads").write_text("3")  # each run lasts until the gauge was read 3 times under load
    first, second = tiny_model(tmp_path / "a.ptl"), tiny_model(tmp_path / "b.ptl", channels=4)
    rows = adb_device(server, phone, binary, rounds=2, iters=4).benchmark([str(first), str(second)], SHAPE)
    order = [re.search(r"--model=\S*/(\S+?)'? ", c)[1] for c in runs_of(phone)]
    assert order == ["0-a.ptl", "1-b.ptl", "1-b.ptl", "0-a.ptl"] and all("--iter=2" in c for c in runs_of(phone))
    assert sum("sha256sum" in c and "/run-" in c for c in phone.commands) == 2  # each file pushed (and checked) once
    for row in rows:
        assert len(row["samples_ms"]) == 4 and row["latency_source"] == "observer" and row["rounds"] == 2
        assert (row["power_source"], row["battery_temp_c_before"], row["notes"]) == ("battery", 29.5, [])
        assert row["power_w_idle"] == pytest.approx(1.8)
        assert_load_readings(row, idle_w=1.8, load_w=5.8, at_least=2 * 3)  # 3 per run, 2 runs
        expected = (row["power_w_mean"] - row["power_w_idle"]) * statistics.fmean(row["samples_ms"])
        assert row["energy_mj_per_inf"] == pytest.approx(expected)


def test_energy_with_a_microamp_gauge_that_counts_discharge_positive(server, phone, binary, tmp_path):
    phone.set_battery(300, usb=False)
    phone.set_power(idle_current=300_000, load_current=800_000, voltage=3_900_000)
    (phone.root / "load_reads").write_text("3")
    [row] = adb_device(server, phone, binary).benchmark([str(tiny_model(tmp_path / "m.ptl"))], SHAPE)
    assert row["power_w_idle"] == pytest.approx(0.3 * 3.9)
    assert_load_readings(row, idle_w=0.3 * 3.9, load_w=0.8 * 3.9, at_least=3)
    expected = (row["power_w_mean"] - row["power_w_idle"]) * statistics.fmean(row["samples_ms"])
    assert row["energy_mj_per_inf"] == pytest.approx(expected) and row["power_samples"] >= 3


@pytest.mark.slow
def test_two_benchmarks_on_one_phone_run_one_after_the_other(server, phone, binary, tmp_path):
    """Rows with the phone's fingerprint, a hostile local path, the binary pushed once, and the per-serial lock."""
    (phone.root / "slow").write_text("0.5")  # long runs: without the lock the two would overlap
    folder = tmp_path / "dir; touch pwned1"
    folder.mkdir()
    model, rows, errors = tiny_model(folder / "m'$(touch pwned2).ptl"), [], []

    def bench() -> None:
        try:
            rows.extend(adb_device(server, phone, binary).benchmark([str(model)], SHAPE))
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
        assert len(row["samples_ms"]) == 3 and min(row["samples_ms"]) > 0 and row["latency_source"] == "observer"
        fingerprint = [row[k] for k in ("device", "device_serial", "device_soc", "device_board", "device_abi")]
        assert fingerprint == ["adb:Pixel Emu", phone.serial, "EMU8450", "emu8450", "arm64-v8a"]
        assert (row["android"], row["battery_temp_c_before"], row["battery_temp_c_after"]) == ("14", 31.2, 31.2)
        assert (row["power_source"], row["notes"]) == ("usb", [ON_USB]) and "energy_mj_per_inf" not in row
    remote = phone.local("/data/local/tmp/pocketbench")
    assert [p.name for p in remote.iterdir()] == ["speed_benchmark_torch"]  # run dirs removed
    assert sum(c.startswith("chmod") for c in phone.commands) == 1  # the same binary is not pushed twice
    assert not pwned(phone)


def test_a_pool_runs_each_session_on_a_free_phone(server, phone, binary, tmp_path):
    """Two sessions at once on a pool of two phones: one each, the dicts say which; identity is the pool's."""
    with attached_phone(server, tmp_path / "second", props={"ro.product.model": "Pixel Emu B"}) as other:
        pool = [phone.serial, other.serial]
        gone = other.serial
        for member in (phone, other):
            (member.root / "slow").write_text("1")  # each session holds its phone long enough to overlap
        model, rows = str(tiny_model(tmp_path / "m.ptl")), []

        def bench() -> None:
            rows.extend(adb_device(server, phone, binary, serial=pool).benchmark([model], SHAPE))

        threads = [threading.Thread(target=bench) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted((r["device_serial"], r["device"]) for r in rows) == sorted(
            [(phone.serial, "adb:Pixel Emu"), (other.serial, "adb:Pixel Emu B")]
        )
        assert len(runs_of(phone)) == len(runs_of(other)) == 1
        devices = [adb_device(server, phone, binary, serial=order) for order in (pool, pool[::-1])]
        for device in devices:
            device.attach()
        forward, backward = (device.identity() for device in devices)
        assert forward == backward
        models = {m["device_serial"]: m["device_model"] for m in forward["pool"]}
        assert models == {phone.serial: "Pixel Emu", other.serial: "Pixel Emu B"}
        assert [m["device_serial"] for m in forward["pool"]] == sorted(pool)
        assert forward["device"] == "adb:Pixel Emu+adb:Pixel Emu B"
    with pytest.raises(DeviceError, match=f"device {gone} is not attached"):
        adb_device(server, phone, binary, serial=pool).attach()


PARSING = re.escape("Parsing commandline arguments for c10.\n")
FAILED = re.escape("Failed to parse command line flags!\n")
BOOL_NOTE = re.escape(
    "Note that if you are passing in a bool flag, you need to explicitly specify it, like --arg=True or --arg True. "
    "Otherwise, the next argument may be inadvertently used as the argument, causing the above error.\n"
)
OBSERVED = r'PyTorchObserver \{"type": "NET", "unit": "us", "metric": "latency", "value": "\d+"\}\n'
STARTED = r"Starting benchmark\.\nRunning warmup runs\.\n"
SUMMARY = r"Main run finished\. Microseconds per iter: [\d.e+]+\. Iters per second: [\d.e+]+\n"
FRAMES = r"(.*\n)*Exception raised from .*\nframe #0: .*\n(.*\n)*"
MAIN = re.escape("Main runs.\n")


@pytest.mark.parametrize(
    ("flags", "dialect", "fault", "code", "out", "err"),
    [
        (["--bogus=1"], "android", None, 1, "", PARSING + "C10 flag: unrecognized commandline argument: --bogus=1\n"
         + FAILED),
        (["--report_pep"], "android", None, 1, "", PARSING + "C10 flag: reached the last commandline argument, but I "
         "am expecting a value for --report_pep" + FAILED),
        (["--report_pep", "--warmup=2"], "android", None, 1, "", PARSING + "C10 flag error: Cannot convert argument "
         "to bool: --warmup=2\n" + BOOL_NOTE + "C10 flag: illegal argument: --report_pep\n" + FAILED),
        (["--iter=2", "--report_pep=true"], "android", None, 0, STARTED + MAIN + OBSERVED * 2 + SUMMARY,
         ""),
        (["--iter=0"], "android", None, 0, STARTED + re.escape("Main runs.\nMain run finished. Microseconds per iter: "
         "inf. Iters per second: 0\n"), ""),
        (["--input_type=int64"], "host", None, 134, STARTED, re.escape("terminate called after throwing an instance of"
         " 'c10::Error'\n  what():  expected scalar type Long but found Float\n") + FRAMES + "Aborted\n"),
        (["--input_type=int64"], "android", None, 134, STARTED, re.escape("libc++abi: terminating due to uncaught "
         "exception of type c10::Error: expected scalar type Long but found Float\n") + "(.*\n)*Aborted\n"),
        (["--input_dims=1,x"], "host", None, 134, "", re.escape("terminate called after throwing an instance of "
         "'std::invalid_argument'\n  what():  stoi\nAborted\n")),
        (["--report_pep=true"], "android", "segv_at_exit", 139, STARTED + MAIN + OBSERVED * 10 + SUMMARY,
         "Segmentation fault\n"),
    ],
    ids=["unknown", "bare-last", "bool-swallow", "ok", "iter0", "abort-host", "abort-android", "stoi", "segv-exit"],
)  # fmt: skip
def test_the_stand_in_prints_the_real_texts_on_the_real_streams(server, phone, tmp_path, flags, dialect, fault, code,
                                                                out, err):  # fmt: skip
    """What the binary prints (stdout vs stderr as regexes, exit code, the shell's signal message), run by hand."""
    sbt = make_fake_binary(phone.local("/data/local/tmp/sbt"), dialect=dialect)
    model = tiny_model(phone.local("/data/local/tmp/m.ptl"))
    if fault:
        (phone.root / fault).touch()
    base = ["--model=/data/local/tmp/m.ptl", "--input_dims=1,1,8,8", "--input_type=float", "--warmup=1"]
    result = Adb("adb", phone.serial, port=server.port).shell(["/data/local/tmp/sbt", *base, *flags])
    assert sbt.exists() and model.exists() and result.code == code
    assert re.fullmatch(out, result.out) and re.fullmatch(err, result.err)
