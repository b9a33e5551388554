"""Pure parts of adb_bench on the texts real programs print: speed_benchmark_torch output and failures, getprop,
dumpsys battery, adb devices, energy arithmetic, the session's schedule, the pool's locks, cooldown."""

from __future__ import annotations

import pytest
from filelock import FileLock

from adb_bench.adb import AdbDevice
from adb_bench.causes import meaningful_lines
from adb_bench.energy import EnergySettings, energy_columns
from adb_bench.errors import DeviceError, TransientError
from adb_bench.fingerprint import cool_down, fingerprint_of, parse_battery, parse_getprop
from adb_bench.lock import free_phone, lock_path
from adb_bench.parse import GarbledOutput, parse_speed_benchmark
from adb_bench.session import iteration_shares, run_order
from adb_bench.speed_benchmark import SpeedBenchmarkTorch, failure
from adb_bench.transport import ShellResult, adb_failure, parse_devices, state_problem

BINARY = "/data/local/tmp/pocketbench/speed_benchmark_torch"
RUN = """\
Starting benchmark.
Running warmup runs.
Main runs.
PyTorchObserver {"type": "NET", "unit": "us", "metric": "latency", "value": "79"}
PyTorchObserver {"type": "NET", "unit": "us", "metric": "latency", "value": "1.52913e+06"}
PyTorchObserver {"type": "NET", "unit": "us", "metric": "memory", "value": "4096"}
Main run finished. Microseconds per iter: 60.5814. Iters per second: 16506.7
"""
PROGRESS = "Starting benchmark.\nRunning warmup runs.\n"
FRAMES = (
    "Exception raised from forward at torch/csrc/jit/mobile/function.cpp:195 (most recent call first):\n"
    "frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x96 (0x7f3a2c1a9446 in libc10.so)\n"
    "frame #1: <unknown function> + 0x1c2b3 (0x55d0c0a1c2b3 in speed_benchmark_torch)\n"
)
HOST_ABORT = "terminate called after throwing an instance of '{0}'\n  what():  {1}\n" + FRAMES
PHONE_ABORT = "libc++abi: terminating due to uncaught exception of type {0}: {1}\n"
FLAGS_FAILED = "Failed to parse command line flags!\n"
INPUT_TYPE_HINT = "; set device.input_type to what the model takes (float for float and int8 models)"
FLAG_HINT = "; check --input_dims/--input_type/--input_memory_format in device.extra_args"


def test_observer_lines_become_samples_in_microseconds():
    timings = parse_speed_benchmark(RUN)
    assert (timings.samples_us, timings.source) == ([79.0, 1529130.0], "observer")  # memory records skipped


def test_summary_is_the_fallback_without_observer_lines():
    text = PROGRESS + "Main runs.\nMain run finished. Microseconds per iter: 60.5814. Iters per second: 16506.7\n"
    assert (parse_speed_benchmark(text).samples_us, parse_speed_benchmark(text).source) == ([60.5814], "summary")


def test_zero_iterations_and_garbled_output_are_one_line_errors():
    zero = PROGRESS + "Main runs.\nMain run finished. Microseconds per iter: inf. Iters per second: 0\n"
    with pytest.raises(GarbledOutput, match=r"ran no timed iteration \(Microseconds per iter: inf\)"):
        parse_speed_benchmark(zero)
    for text in ("", PROGRESS, 'PyTorchObserver {"type": "NET"\n'):
        with pytest.raises(GarbledOutput, match="no latency") as info:
            parse_speed_benchmark(text)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("code", "out", "err", "expected"),
    [
        (1, "", "Parsing commandline arguments for c10.\nC10 flag: unrecognized commandline argument: --bogus=1\n"
         + FLAGS_FAILED, "speed_benchmark_torch has no flag --bogus=1: remove it from device.extra_args"),
        (1, "", "Parsing commandline arguments for c10.\nC10 flag: reached the last commandline argument, but I am "
         "expecting a value for --report_pepFailed to parse command line flags!\n",
         "speed_benchmark_torch flag --report_pep needs a value: write --report_pep=true in device.extra_args"),
        (1, "", "Parsing commandline arguments for c10.\nC10 flag error: Cannot convert argument to bool: --warmup=2\n"
         "Note that if you are passing in a bool flag, you need to explicitly specify it, like --arg=True or --arg "
         "True. Otherwise, the next argument may be inadvertently used as the argument, causing the above error.\n"
         "C10 flag: illegal argument: --report_pep\n" + FLAGS_FAILED,
         "speed_benchmark_torch flag --report_pep took '--warmup=2' as its value: write --report_pep=true (bool flags "
         "need =true/=false) in device.extra_args"),
        (134, PROGRESS, HOST_ABORT.format("c10::Error", "Input type (long int) and bias type (float) should be the "
         "same"),
         "speed_benchmark_torch stopped on c10::Error: Input type (long int) and bias type (float) should be the same"
         + INPUT_TYPE_HINT),
        (134, PROGRESS, PHONE_ABORT.format("c10::Error", "expected scalar type Long but found Float") +
         "Exception raised from forward at torch/csrc/jit/mobile/function.cpp:195 (most recent call first):\n"
         "(no backtrace available)\n",
         "speed_benchmark_torch stopped on c10::Error: expected scalar type Long but found Float" + INPUT_TYPE_HINT),
        (134, "", PHONE_ABORT.format("std::runtime_error", "Unsupported input type: double"),
         "speed_benchmark_torch stopped on std::runtime_error: Unsupported input type: double" + INPUT_TYPE_HINT),
        (1, "", 'CANNOT LINK EXECUTABLE "' + BINARY + '": library "libc++_shared.so" not found: needed by main '
         "executable\n", "speed_benchmark_torch needs libc++_shared.so, which the phone does not have: add "
         "device.push_libs=[/path/to/libc++_shared.so] (the one from the NDK that built it)"),
        (1, "", 'CANNOT LINK EXECUTABLE "./speed_benchmark_torch": library "libc++_shared.so" not found\nAborted\n',
         "speed_benchmark_torch needs libc++_shared.so, which the phone does not have: add "
         "device.push_libs=[/path/to/libc++_shared.so] (the one from the NDK that built it)"),
        (1, "", 'CANNOT LINK EXECUTABLE "./speed_benchmark_torch": cannot locate symbol "__cxa_foo" referenced by '
         '"/data/local/tmp/pocketbench/speed_benchmark_torch"...\n',
         "speed_benchmark_torch cannot be linked on this phone (cannot locate symbol \"__cxa_foo\" referenced by "
         "\"/data/local/tmp/pocketbench/speed_benchmark_torch\"...): rebuild it for the phone's Android version"),
        (134, "", HOST_ABORT.format("c10::Error", "open file failed because of errno 2 on fopen: No such file or "
         "directory, file path: /data/local/tmp/pocketbench/run-1/0-model.ptl"),
         "speed_benchmark_torch stopped on c10::Error: open file failed because of errno 2 on fopen: No such file or "
         "directory, file path: /data/local/tmp/pocketbench/run-1/0-model.ptl"),
        (134, "", HOST_ABORT.format("c10::Error", "PytorchStreamReader failed locating file bytecode.pkl: file not "
         "found"), "speed_benchmark_torch stopped on c10::Error: PytorchStreamReader failed locating file bytecode.pkl:"
         " file not found; this is a full-JIT TorchScript file, not a lite-interpreter .ptl: export it with the ptl "
         "format"),
        (134, "", PHONE_ABORT.format("c10::Error", "PytorchStreamReader failed reading zip archive: failed finding "
         "central directory"), "speed_benchmark_torch stopped on c10::Error: PytorchStreamReader failed reading zip "
         "archive: failed finding central directory; the file is truncated or not a .ptl: delete its cache entry and "
         "rerun"),
        (134, PROGRESS, HOST_ABORT.format("c10::Error", "Given groups=1, weight of size [8, 1, 3, 3], expected input"
         "[1, 3, 224, 224] to have 1 channels, but got 3 channels instead\n  \n  Debug info for handle(s): "
         "debug_handles:{-1}, was not found.\n  "),
         "speed_benchmark_torch stopped on c10::Error: Given groups=1, weight of size [8, 1, 3, 3], expected input"
         "[1, 3, 224, 224] to have 1 channels, but got 3 channels instead"),
        (134, "", HOST_ABORT.format("std::invalid_argument", "stoi"),
         "speed_benchmark_torch stopped on std::invalid_argument: stoi" + FLAG_HINT),
        (134, "", HOST_ABORT.format("c10::Error", "Input dims and format should have the same number of items."),
         "speed_benchmark_torch stopped on c10::Error: Input dims and format should have the same number of items."
         + FLAG_HINT),
        (134, "", HOST_ABORT.format("c10::Error", "Lite Interpreter version number does not match. The model version "
         "must be between 3 and 7 but the model version is 8 ()"), "speed_benchmark_torch stopped on c10::Error: Lite "
         "Interpreter version number does not match. The model version must be between 3 and 7 but the model version "
         "is 8 (); the file's bytecode is newer than the binary reads: export with export.bytecode_version=7 or "
         "rebuild the binary from a newer PyTorch"),
        (139, RUN, "Segmentation fault\n", "speed_benchmark_torch printed a result, then crashed on exit (Segmentation "
         "fault, exit 139): the run is not trusted; rerun it"),
        (139, PROGRESS + "Main runs.\n", "Segmentation fault\n",
         "speed_benchmark_torch crashed (Segmentation fault, exit 139)"),
        (126, "", f"/system/bin/sh: {BINARY}: not executable: 64-bit ELF file\n", "speed_benchmark_torch is built for "
         f"another CPU (/system/bin/sh: {BINARY}: not executable: 64-bit ELF file): rebuild it with ANDROID_ABI = the "
         "phone's device_abi"),
        (126, "", f"/system/bin/sh: {BINARY}: not executable: magic 7F45\n", "speed_benchmark_torch is built for "
         f"another CPU (/system/bin/sh: {BINARY}: not executable: magic 7F45): rebuild it with ANDROID_ABI = the "
         "phone's device_abi"),
        (126, "", "/system/bin/sh: /sdcard/pb/speed_benchmark_torch: can't execute: Permission denied\n",
         "speed_benchmark_torch may not run from /data/local/tmp/pocketbench (/system/bin/sh: /sdcard/pb/"
         "speed_benchmark_torch: can't execute: Permission denied): keep device.remote_dir under /data/local/tmp"),
        (127, "", f"/system/bin/sh: {BINARY}: inaccessible or not found\n", "speed_benchmark_torch is missing on the "
         f"phone (/system/bin/sh: {BINARY}: inaccessible or not found): rerun (it is pushed again) or check "
         "device.remote_dir"),
        (1, PROGRESS, "", "speed_benchmark_torch exited with 1: no message"),
    ],
)  # fmt: skip
def test_every_failure_is_one_line_naming_its_cause(code, out, err, expected):
    assert failure(ShellResult(code, out, err), BINARY, "/data/local/tmp/pocketbench") == expected


def test_a_shell_without_v2_merges_the_streams_and_the_cause_is_still_found():
    merged = PROGRESS + PHONE_ABORT.format("c10::Error", "expected scalar type Long but found Float")
    message = failure(ShellResult(134, merged, ""), BINARY, "/data/local/tmp/pocketbench")
    assert message.startswith("speed_benchmark_torch stopped on c10::Error: expected scalar type Long")


def test_prompts_frames_and_debug_handles_never_name_a_cause():
    text = "flame:/data/local/tmp $ ./sbt\n" + FRAMES + "  Debug info for handle(s): x\nSegmentation fault\n"
    text += "139|flame:/ $"
    assert meaningful_lines(text) == ["Segmentation fault"]


def test_flags_are_the_documented_ones():
    runner = SpeedBenchmarkTorch(extra_args=["--use_caching_allocator=true"])
    assert runner.flags("/d/m.ptl", [1, 3, 32, 32], 2, 7) == [
        "--model=/d/m.ptl", "--input_dims=1,3,32,32", "--input_type=float", "--warmup=2", "--iter=7",
        "--report_pep=true", "--use_caching_allocator=true",
    ]  # fmt: skip


GETPROP_ANDROID_11 = (
    "[ro.board.platform]: [kona]\r\n[ro.build.version.release]: [11]\r\n[ro.product.cpu.abi]: [arm64-v8a]\r\n"
    "[ro.product.model]: [Pixel 5]\r\n[ro.hardware]: [redfin]\r\n[persist.sys.motd]: [first line\r\nsecond line]\r\n"
    "[ro.build.fingerprint]: [google/redfin/redfin:11/RQ3A.211001.001/7641976:user/release-keys]\r\n"
)


def test_getprop_with_crlf_multiline_values_and_no_soc_model():
    props = parse_getprop(GETPROP_ANDROID_11)
    assert props["persist.sys.motd"] == "first line\nsecond line" and props["ro.product.model"] == "Pixel 5"
    found = fingerprint_of(props)
    assert (found["device_soc"], found["device_board"], found["android"]) == ("kona", "kona", "11")  # no ro.soc.model
    assert found["device_manufacturer"] == ""  # recorded as unknown, not guessed
    assert fingerprint_of({"ro.product.model": "Two\nLines"})["device_model"] == "Two Lines"


PIXEL_BATTERY = """Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Dock powered: false
  Max charging current: 500000
  status: 2
  health: 2
  present: true
  level: 87
  voltage: 4312
  temperature: 312
  technology: Li-ion
  Charging state: 1
  Capacity level: 3
"""
SAMSUNG_BATTERY = """Current Battery Service state:
  (UPDATES STOPPED -- use 'reset' to restart)
  AC powered: false
  USB powered: false
  Wireless powered: true
  status: 5
  temperature: 287
  mSavedBatteryMaxTemp: 450
  mSavedBatteryMaxCurrent: 2987
  LED Charging: true
"""
INDENTED_ON_BATTERY = "Current Battery Service state:\n\tAC powered: false\n\tUSB powered: false\n\tstatus: 3\n" \
                      "\ttemperature: -35\n"  # fmt: skip
BOARD_BATTERY = "Current Battery Service state:\n  AC powered: true\n  present: false\n  status: 1\n  temperature: 0\n"


@pytest.mark.parametrize(
    ("text", "temp_c", "source", "status"),
    [(PIXEL_BATTERY, 31.2, "usb", 2), (SAMSUNG_BATTERY, 28.7, "wireless", 5),
     (INDENTED_ON_BATTERY, -3.5, "battery", 3), (BOARD_BATTERY, None, "ac", 1), ("Can't find service: battery", None,
     "battery", None)],
)  # fmt: skip
def test_dumpsys_battery_variants(text, temp_c, source, status):
    battery = parse_battery(text)
    assert (battery.temp_c, battery.source, battery.status) == (temp_c, source, status)


DEVICES = """\
* daemon not running; starting now at tcp:5037
* daemon started successfully
List of devices attached
0123456789ABCDEF\tdevice
863276c1\tno permissions (missing udev rules? user is in the plugdev group); see [http://developer.android.com/tools/device.html]
A1B2C3\tno permissions (user alice is not in the plugdev group); see [http://developer.android.com/tools/device.html]
????????????\tno permissions
HT4A1JT00123\tunauthorized
192.168.1.7:5555\toffline
emulator-5554\tsideload
ZY22\trecovery
ZY23\tbootloader
ZY24\thost
ZY25\tauthorizing

"""
DEVICES_LONG = """\
List of devices attached
0123456789ABCDEF       device usb:1-1 product:flame model:Pixel_4 device:flame transport_id:2
863276c1               no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-1.3 transport_id:3
emulator-5554          offline transport_id:1
"""  # noqa: E501 — verbatim adb output


def test_every_adb_devices_state_and_the_long_format():
    listed = [(d.serial, d.state) for d in parse_devices(DEVICES)]
    assert [s for _, s in listed] == [
        "device", "no permissions (missing udev rules? user is in the plugdev group); see "
        "[http://developer.android.com/tools/device.html]", "no permissions (user alice is not in the plugdev group); "
        "see [http://developer.android.com/tools/device.html]", "no permissions", "unauthorized", "offline", "sideload",
        "recovery", "bootloader", "host", "authorizing",
    ]  # fmt: skip
    long = parse_devices(DEVICES_LONG)
    assert [(d.serial, d.state) for d in long][::2] == [("0123456789ABCDEF", "device"), ("emulator-5554", "offline")]
    assert long[0].attributes == {"usb": "1-1", "product": "flame", "model": "Pixel_4", "device": "flame",
                                  "transport_id": "2"}  # fmt: skip
    assert long[1].state.startswith("no permissions (user in plugdev group; are your udev rules wrong?)")
    assert long[1].attributes == {"usb": "1-1.3", "transport_id": "3"}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("no permissions (missing udev rules? user is in the plugdev group); see [http://developer.android.com/tools/"
         "device.html]", "device S has no permissions (missing udev rules? user is in the plugdev group): adb may not "
         "open the USB device: install udev rules (Debian/Ubuntu: sudo apt-get install android-sdk-platform-tools-"
         "common), be in the plugdev group, replug"),
        ("no permissions", "device S has no permissions: adb may not open the USB device: install udev rules "
         "(Debian/Ubuntu: sudo apt-get install android-sdk-platform-tools-common), be in the plugdev group, replug"),
        ("unauthorized", "device S is unauthorized: unlock it and accept the 'Allow USB debugging' prompt (no prompt? "
         "adb kill-server, replug)"),
        ("offline", "device S is offline: replug the cable or run adb reconnect"),
        ("sideload", "device S is sideload: it is in recovery (sideload): reboot it into Android with adb reboot"),
        ("recovery", "device S is recovery: it is in recovery: reboot it into Android with adb reboot"),
        ("bootloader", "device S is bootloader: it is in the bootloader: reboot it into Android with fastboot reboot"),
        ("host", "device S is host: that entry is an adb host, not a phone: pick the phone's serial (adb devices)"),
        ("unknown", "device S is unknown: replug it or run adb reconnect"),
    ],
)  # fmt: skip
def test_each_state_says_what_to_do(state, expected):
    assert str(state_problem("S", state)) == expected
    assert state_problem("S", "device") is None


def test_adb_failures_are_classified():
    assert isinstance(adb_failure("error: device offline", "s"), TransientError)
    assert "accept" in str(adb_failure("error: device unauthorized.", "s"))
    perms = adb_failure(
        "error: insufficient permissions for device: user in plugdev group; are your udev rules wrong?", ""
    )
    assert "install udev rules" in str(perms)
    full = adb_failure("adb: error: failed to copy 'a' to 'b': remote No space left on device", "s")
    assert not isinstance(full, TransientError) and "No space left" in str(full)


def lines(current: float, voltage: float, count: int) -> str:
    return f"{current:.0f} {voltage:.0f}\n" * count


@pytest.mark.parametrize(
    ("scale_i", "scale_v", "sign"), [(1e6, 1e6, 1), (1e6, 1e6, -1), (1e3, 1e3, 1), (1e3, 1e3, -1), (1e3, 1e6, -1)]
)
def test_energy_per_inference_in_both_units_and_both_signs(scale_i, scale_v, sign):
    """Idle 0.2 A × 4 V = 0.8 W, running 0.7 A × 4 V = 2.8 W: 2 W above idle × 5 ms = 10 mJ per inference."""
    idle = lines(0.2 * scale_i * sign, 4.0 * scale_v, 20)
    run = lines(0.7 * scale_i * sign, 4.0 * scale_v, 30) + "garbage\n"
    row = energy_columns(idle, run, 5.0, EnergySettings())
    assert row["power_w_idle"] == pytest.approx(0.8) and row["power_w_mean"] == pytest.approx(2.8)
    assert row["energy_mj_per_inf"] == pytest.approx(10.0) and row["power_samples"] == 30 and "notes" not in row


def test_energy_units_can_be_forced_and_empty_energy_says_why():
    forced = EnergySettings(current_unit="uA", voltage_unit="uV")  # 5 mA in µA looks like mA to `auto`
    row = energy_columns(lines(1000, 4e6, 3), lines(5000, 4e6, 3), 2.0, forced)
    assert row["energy_mj_per_inf"] == pytest.approx((5000 - 1000) * 1e-6 * 4 * 2.0)
    flat = energy_columns(lines(5e5, 4e6, 3), lines(5e5, 4e6, 3), 2.0, EnergySettings())
    assert "energy_mj_per_inf" not in flat and flat["notes"][0].startswith("energy not resolved: 2.000 W during")
    assert energy_columns("", lines(5e5, 4e6, 3), 2.0, EnergySettings())["notes"] == [
        "energy not measured: no current/voltage samples were read"
    ]
    with pytest.raises(DeviceError, match=r"device.energy.current_unit='A': use auto, uA or mA"):
        EnergySettings(current_unit="A")


def test_iterations_are_shared_over_rounds_and_files_alternate():
    assert iteration_shares(10, 3) == [4, 3, 3] and sum(iteration_shares(50, 5)) == 50
    assert run_order(2, 3) == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1)]


def test_a_pool_takes_the_first_free_phone(tmp_path):
    with FileLock(lock_path(tmp_path, "A")), free_phone(tmp_path, ["A", "B"]) as serial:
        assert serial == "B"
    with free_phone(tmp_path, ["A", "B"]) as first, free_phone(tmp_path, ["A", "B"]) as second:
        assert (first, second) == ("A", "B")


def test_device_settings_are_checked_where_they_are_built(tmp_path):
    with pytest.raises(DeviceError, match=r"^device.rounds=8 must be between 1 and device.iters=5$"):
        AdbDevice(iters=5, rounds=8)
    with pytest.raises(DeviceError, match=r"^device.taskset='cores' is not a hex CPU mask \(e.g. f0 = cores 4-7\)$"):
        AdbDevice(taskset="cores")
    with pytest.raises(DeviceError, match="^device.serial is an empty list"):
        AdbDevice(serial=[])
    (tmp_path / "file").touch()
    with pytest.raises(DeviceError, match="cannot create the lock folder .* set device.lock_dir$"):
        free_phone(tmp_path / "file" / "locks", ["A"]).__enter__()


def test_lock_file_name_is_safe():
    assert lock_path("/locks", "127.0.0.1:5555; rm -rf /").name == "127.0.0.1_5555__rm_-rf__.lock"


def test_cooldown_waits_until_cool_or_max_wait():
    temps, slept = iter([41.0, 39.0, 34.0]), []
    cool_down(lambda: next(temps), 35.0, max_wait_s=600, poll_s=5, sleep=slept.append)
    assert slept == [5, 5]
    slept.clear()
    cool_down(lambda: 50.0, 35.0, max_wait_s=0, poll_s=5, sleep=slept.append)
    assert slept == []  # never waits past max_wait_s
