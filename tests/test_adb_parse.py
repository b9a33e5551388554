"""Pure parts of adb_bench: speed_benchmark_torch output, getprop/dumpsys parsing, failure messages, cooldown."""

from __future__ import annotations

import pytest

from adb_bench.errors import TransientError
from adb_bench.fingerprint import cool_down, fingerprint_of, parse_battery_temp_c, parse_getprop
from adb_bench.lock import lock_path
from adb_bench.parse import GarbledOutput, parse_speed_benchmark
from adb_bench.speed_benchmark import RunSettings, failure, flags
from adb_bench.transport import ShellResult, adb_failure

CAPTURED = """\
Starting benchmark.
Running warmup runs.
Main runs.
PyTorchObserver {"type": "NET", "unit": "us", "metric": "latency", "value": "1.23457e+06"}
PyTorchObserver {"type": "NET", "unit": "us", "metric": "latency", "value": "987"}
PyTorchObserver {"type": "NET", "unit": "ms", "metric": "latency", "value": "2.5"}
PyTorchObserver {"type": "NET", "unit": "us", "metric": "memory", "value": "4096"}
PyTorchObserver {"type": "NET", "unit": "us", "metric": "latency", "value": "oops"}
Main run finished. Microseconds per iter: 412345. Iters per second: 2.42513
"""


def test_observer_lines_become_samples_in_microseconds():
    timings = parse_speed_benchmark(CAPTURED)
    assert timings.source == "observer"
    assert timings.samples_us == [1234570.0, 987.0, 2500.0]  # memory records and bad values are skipped


def test_summary_is_the_fallback_without_observer_lines():
    text = "Starting benchmark.\nMain runs.\nMain run finished. Microseconds per iter: 1.5e+03. Iters per second: 666\n"
    timings = parse_speed_benchmark(text)
    assert (timings.samples_us, timings.source) == ([1500.0], "summary")


@pytest.mark.parametrize("text", ["", "Segmentation fault\n", 'PyTorchObserver {"type": "NET"\n'])
def test_garbled_output_is_a_one_line_error(text):
    with pytest.raises(GarbledOutput, match="no latency") as info:
        parse_speed_benchmark(text)
    assert "\n" not in str(info.value)


def test_getprop_and_battery_parsing():
    text = "[ro.product.model]: [Pixel 7]\r\n[ro.board.platform]: [gs201]\n[ro.product.cpu.abi]: [arm64-v8a]\n"
    props = parse_getprop(text)
    found = fingerprint_of(props)
    assert (found["device_model"], found["device_soc"], found["device_abi"]) == ("Pixel 7", "gs201", "arm64-v8a")
    assert found["android"] == ""  # recorded as unknown, not guessed
    assert parse_battery_temp_c("Current Battery Service state:\n  level: 80\n  temperature: 347\n") == 34.7
    assert parse_battery_temp_c("no battery here") is None


def test_flags_are_the_documented_ones():
    run = RunSettings(warmup=2, iters=7, extra_args=["--use_caching_allocator=true"])
    assert flags("/d/m.ptl", [1, 3, 32, 32], run) == [
        "--model=/d/m.ptl", "--input_dims=1,3,32,32", "--input_type=float", "--warmup=2", "--iter=7",
        "--report_pep=true", "--use_caching_allocator=true",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "err", "expected"),
    [
        (1, "Failed to parse command line flags!", "rejected its flags"),
        (126, "sh: 1: exec: /data/local/tmp/x: Exec format error", "wrong ABI"),
        (126, "/system/bin/sh: /data/local/tmp/x: not executable: 32-bit ELF file", "wrong ABI"),
        (127, "sh: /data/local/tmp/x: inaccessible or not found", "missing on the device"),
        (126, "sh: /sdcard/x: Permission denied", "not executable"),
        (
            134,
            "what():  Lite Interpreter version number does not match. The model version must be between 3 and 7 "
            "but the model version is 8 ()",
            "export.bytecode_version=7",
        ),  # fmt: skip
        (139, "Segmentation fault", "exited with 139: Segmentation fault"),
    ],
)
def test_binary_failures_say_what_to_do(code, err, expected):
    message = str(failure(ShellResult(code, "", err), "/data/local/tmp/x"))
    assert expected in message and "\n" not in message


def test_adb_failures_are_classified():
    assert isinstance(adb_failure("error: device offline", "s"), TransientError)
    assert "accept" in str(adb_failure("error: device unauthorized.", "s"))
    full = adb_failure("adb: error: failed to copy 'a' to 'b': remote No space left on device", "s")
    assert not isinstance(full, TransientError) and "No space left" in str(full)


def test_cooldown_waits_until_cool_or_max_wait():
    temps, slept = iter([41.0, 39.0, 34.0]), []
    cool_down(lambda: next(temps), 35.0, max_wait_s=600, poll_s=5, sleep=slept.append)
    assert slept == [5, 5]
    slept.clear()
    cool_down(lambda: 50.0, 35.0, max_wait_s=0, poll_s=5, sleep=slept.append)
    assert slept == []  # never waits past max_wait_s


def test_lock_file_name_is_safe():
    assert lock_path("/locks", "127.0.0.1:5555; rm -rf /").name == "127.0.0.1_5555__rm_-rf__.lock"
