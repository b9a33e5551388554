"""The `adb` device: times exported files on an attached Android phone (or a pool of phones), each with the binary
of its format (.ptl: speed_benchmark_torch, .pte: ExecuTorch's executor_runner, .tflite: LiteRT's benchmark_model),
interleaved in one session, and
measures energy per inference when on battery."""

from __future__ import annotations

import logging
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from adb_bench.benchmark_model import BUILD_HINT as TFLITE_BUILD_HINT
from adb_bench.benchmark_model import BenchmarkModel
from adb_bench.energy import EnergySettings, energy_columns
from adb_bench.errors import DeviceError, TransientError
from adb_bench.executor_runner import BUILD_HINT as ET_BUILD_HINT
from adb_bench.executor_runner import ExecutorRunner
from adb_bench.fingerprint import Battery, cool_down, read_battery, read_fingerprint
from adb_bench.lock import free_phone
from adb_bench.session import Binary, FileRuns, Runner, RunSettings, Session
from adb_bench.speed_benchmark import BUILD_HINT, SpeedBenchmarkTorch
from adb_bench.transport import Adb, sha256_of

log = logging.getLogger(__name__)
T = TypeVar("T")
ROW_FINGERPRINT = ("device_serial", "device_model", "device_soc", "device_board", "device_abi", "android")
# the file suffix a binary times → the device setting that names it, how to build it
SETTINGS = {".ptl": ("binary", BUILD_HINT), ".pte": ("et_runner", ET_BUILD_HINT),
            ".tflite": ("tflite_runner", TFLITE_BUILD_HINT)}  # fmt: skip
NO_BINARY = ("device.binary, device.et_runner and device.tflite_runner are not set: point device.binary at "
             "speed_benchmark_torch (.ptl files), device.et_runner at executor_runner (.pte files) or "
             "device.tflite_runner at LiteRT's benchmark_model (.tflite files), built for the phone (README: Benchmark "
             "on your phone)")  # fmt: skip


def unset_binary(suffix: str, runner: Runner) -> DeviceError:
    setting, hint = SETTINGS[suffix]
    return DeviceError(f"device.{setting} is not set: point it at {runner.name} for the phone to time {suffix} files; "
                       f"{hint}")  # fmt: skip


def local_binary(path: str, suffix: str, runner: Runner) -> Path:
    """The binary that times `suffix` files, from its device setting; a path that is not a file is a one-line error."""
    setting, hint = SETTINGS[suffix]
    found = Path(os.path.expanduser(path))
    if not found.is_file():
        raise DeviceError(f"{runner.name} not found at {str(found)!r}: {hint}, set device.{setting}=PATH")
    return found


def local_libs(libs: Sequence[str]) -> list[Path]:
    """device.push_libs as paths; a missing one is a one-line error."""
    paths = [Path(os.path.expanduser(str(lib))) for lib in libs]
    for path in paths:
        if not path.is_file():
            raise DeviceError(f"device.push_libs: {str(path)!r} does not exist (e.g. the NDK's libc++_shared.so)")
    return paths


def serial_list(serial: str | Sequence[str] | None) -> list[str | None]:
    """device.serial: null (the only phone / $ANDROID_SERIAL), one serial, or a list (a pool)."""
    if serial is None or isinstance(serial, str | int):  # Hydra reads an all-digit serial as an int
        return [None if serial is None else str(serial)]
    if not serial:
        raise DeviceError("device.serial is an empty list: list the pool's serials (python cli.py devices)")
    return [str(s) for s in serial]


@dataclass
class Phone:
    adb: Adb
    fingerprint: dict

    @property
    def name(self) -> str:
        return f"adb:{self.fingerprint['device_model'] or self.fingerprint['device_serial']}"


class AdbDevice:
    """A phone, or a pool of phones (device.serial=[A,B]) where each session takes whichever is free:
    `identity()` (the benchmark cache key, the same whichever member runs) and `benchmark(files, shape)`."""

    exclusive_host = False  # the phone has its own lock; the host may keep working while it runs

    def __init__(self, binary: str | None = None, et_runner: str | None = None, tflite_runner: str | None = None,
                 tflite_args: Sequence[str] = (), threads: int | None = None,
                 adb: str = "adb", serial: str | Sequence[str] | None = None,
                 server_host: str | None = None, server_port: int | None = None,
                 remote_dir: str = "/data/local/tmp/pocketbench", warmup: int = 10, iters: int = 50, rounds: int = 5,
                 input_type: str = "float", taskset: str | None = None, extra_args: Sequence[str] = (),
                 push_libs: Sequence[str] = (), timeout_s: float = 300.0, retries: int = 2, retry_wait_s: float = 2.0,
                 cleanup: bool = True, cooldown: dict | None = None, energy: dict | None = None,
                 lock_dir: str | None = None, qengine: str = "qnnpack", profile: bool = False):  # fmt: skip
        if not 1 <= rounds <= iters:
            raise DeviceError(f"device.rounds={rounds} must be between 1 and device.iters={iters}")
        if taskset is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", str(taskset)):
            raise DeviceError(f"device.taskset={taskset!r} is not a hex CPU mask (e.g. f0 = cores 4-7)")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise DeviceError(f"device.threads={threads!r}: give executor_runner a thread count >= 1, or null for its "
                              "own choice (the big cores)")  # fmt: skip
        self.push_libs, self.serials, self.threads = list(push_libs), serial_list(serial), threads
        self.retries, self.retry_wait_s, self.cooldown, self.lock_dir = retries, retry_wait_s, cooldown or {}, lock_dir
        taskset = None if taskset is None else str(taskset)  # Hydra reads an all-digit mask (e.g. 11) as an int
        self.runs, self.qengine = RunSettings(warmup, iters, rounds, taskset, timeout_s), qengine
        self.runners: dict[str, tuple[str | None, Runner]] = {  # file suffix → (the binary's path, its runner)
            ".ptl": (binary, SpeedBenchmarkTorch(input_type, list(extra_args))),
            ".pte": (et_runner, ExecutorRunner(threads)),
            ".tflite": (tflite_runner, BenchmarkModel(threads, list(tflite_args))),
        }
        self.energy = EnergySettings(**(energy or {}))
        self.adb_options = {"exe": adb, "host": server_host, "port": server_port}
        self.remote_dir, self.cleanup, self.profiling = remote_dir, cleanup, profile
        self._identity: dict | None = None

    def attach(self) -> None:
        """Find the binaries and libraries and attach every phone (adb is asked once per device object); what is
        not there is a DeviceError now. Then `identity()`: every member's fingerprint (serial, model, SoC, ...), the
        binaries' and libraries' checksums and the run settings (executor_runner reports no version: its checksum
        is it)."""
        if self._identity is None:
            self.binaries = {suffix: Binary(local_binary(path, suffix, runner), runner)
                             for suffix, (path, runner) in self.runners.items() if path}  # fmt: skip
            if not self.binaries:
                raise DeviceError(NO_BINARY)
            self.libs = local_libs(self.push_libs)
            self.phones = dict(self._attach(serial) for serial in self.serials)
            sha = {suffix: sha256_of(binary.local) for suffix, binary in self.binaries.items()}
            sbt = self.runners[".ptl"][1]
            settings = {
                "binary_sha256": sha.get(".ptl"), "et_runner_sha256": sha.get(".pte"),
                "libs_sha256": [sha256_of(p) for p in self.libs], "warmup": self.runs.warmup, "iters": self.runs.iters,
                "rounds": self.runs.rounds, "input_type": sbt.input_type, "taskset": self.runs.taskset,
                "extra_args": list(sbt.extra_args), "threads": self.threads, "qengine": self.qengine,
                "energy": vars(self.energy), "memory": "VmHWM",
            }  # fmt: skip
            if ".tflite" in sha:  # only then: the identity of phones without it stays what it was
                tflite = self.runners[".tflite"][1]
                settings |= {"tflite_runner_sha256": sha[".tflite"], "tflite_args": list(tflite.extra_args)}
            members = [self.phones[s].fingerprint for s in sorted(self.phones)]
            names = sorted({p.name for p in self.phones.values()})
            who = members[0] if len(members) == 1 else {"pool": members}
            self._identity = who | settings | {"device": "+".join(names)}

    def identity(self) -> dict:
        if self._identity is None:
            raise RuntimeError("AdbDevice.identity() before attach()")
        return self._identity

    def _attach(self, serial: str | None) -> tuple[str, Phone]:
        adb = Adb(serial=serial, **self.adb_options)
        chosen = adb.select()
        return chosen, Phone(adb, {"device_serial": chosen, **read_fingerprint(adb)})

    def benchmark(self, model_paths: Sequence[str], input_shape: Sequence[int]) -> list[dict]:
        """All files in one session on one free phone, interleaved, each timed by the binary of its format; one
        dict per file (samples_ms, where it ran, battery, energy, notes). Transient adb failures retry the whole
        session."""
        self.attach()
        files = [(path, self._binary_for(path)) for path in model_paths]
        with free_phone(self.lock_dir, list(self.phones)) as serial:
            phone = self.phones[serial]
            waited = self._cool_down(phone.adb)
            return self._retrying(phone.adb, lambda: self._session(phone, files, input_shape, waited))

    def profile(self, model_paths: Sequence[str], input_shape: Sequence[int], folder: Path) -> list[dict]:
        """Each file run once more on a free phone with its binary's event tracer on, the dump pulled into `folder`:
        {"etdump": path, "skip": warmup} or {"error": why} per file (Session.trace)."""
        self.attach()
        files = [(path, self._binary_for(path)) for path in model_paths]
        with free_phone(self.lock_dir, list(self.phones)) as serial:
            phone = self.phones[serial]
            session = Session(phone.adb, self.libs, self.remote_dir, self.runs, self.cleanup)
            session.install([binary for _, binary in files])
            return self._retrying(phone.adb, lambda: session.trace(files, input_shape, folder))

    def _binary_for(self, path: str) -> Binary:
        """The binary that times this file, by its suffix; one line when there is none or it is not configured."""
        suffix = Path(path).suffix
        if suffix not in self.runners:
            raise DeviceError(f"device=adb times .ptl, .pte and .tflite files, not {Path(path).name!r}")
        if suffix not in self.binaries:
            raise unset_binary(suffix, self.runners[suffix][1])
        return self.binaries[suffix]

    def _session(self, phone: Phone, files: list[tuple[str, Binary]], shape: Sequence[int], waited: float
                 ) -> list[dict]:  # fmt: skip
        before = read_battery(phone.adb)
        energy, notes = self._energy_plan(phone.adb, before)
        session = Session(phone.adb, self.libs, self.remote_dir, self.runs, self.cleanup)
        session.install([binary for _, binary in files])
        runs, idle = session.measure(files, shape, energy)
        after = read_battery(phone.adb)
        common = {k: phone.fingerprint[k] for k in ROW_FINGERPRINT} | {
            "device": phone.name, "taskset": self.runs.taskset, "rounds": self.runs.rounds,
            "battery_temp_c_before": before.temp_c, "battery_temp_c_after": after.temp_c, "cooldown_s": waited,
            "power_source": before.source,
        }  # fmt: skip
        return [self._row(r, path, idle, energy, notes) | common for r, (path, _) in zip(runs, files, strict=True)]

    def _row(self, runs: FileRuns, path: str, idle: str, energy: EnergySettings | None, notes: list[str]) -> dict:
        """One file's dict: its latencies, the threads its binary said it used (else the taskset's core count) and
        the quantized engine (.ptl files only), the benchmark process's peak memory, energy."""
        samples_ms = [us / 1e3 for us in runs.samples_us]
        pinned = bin(int(self.runs.taskset, 16)).count("1") if self.runs.taskset else None
        row: dict = {"samples_ms": samples_ms, "round_sizes": runs.round_sizes, "latency_source": runs.source,
                     "threads": pinned if runs.threads is None else runs.threads,
                     "qengine": self.qengine if path.endswith(".ptl") else None,
                     "mem_peak_mb": None if runs.peak_kb is None else runs.peak_kb / 1024}  # fmt: skip
        if energy:
            row |= energy_columns(idle, runs.power_text, statistics.fmean(samples_ms), energy)
        unread = "mem_peak_mb: no VmHWM was read from the benchmark's /proc/PID/status (hidden on this phone?)"
        row["notes"] = notes + row.pop("notes", []) + ([unread] if runs.peak_kb is None else [])
        return row

    def _energy_plan(self, adb: Adb, battery: Battery) -> tuple[EnergySettings | None, list[str]]:
        """The energy settings when energy can be measured now, else None and the note that says why not."""
        if not self.energy.enabled:
            return None, []
        if battery.powered:
            charging = " and charging" if battery.charging else ""
            return None, [f"energy not measured: the phone is powered by {battery.source}{charging}; "
                          "use Wi-Fi adb and unplug it (README: energy per inference)"]  # fmt: skip
        if adb.shell(["cat", *self.energy.paths]).code != 0:
            return None, [f"energy not measured: {self.energy.paths[0]} is not readable (device.energy.supply)"]
        return self.energy, []

    def _cool_down(self, adb: Adb) -> float:
        if self.cooldown.get("max_temp_c") is None:
            return 0.0
        limits = [float(self.cooldown.get(k, d)) for k, d in (("max_temp_c", 0), ("max_wait_s", 300), ("poll_s", 10))]
        return cool_down(lambda: read_battery(adb).temp_c, *limits)

    def _retrying(self, adb: Adb, attempt: Callable[[], T]) -> T:
        for number in range(1, self.retries + 1):
            try:
                return attempt()
            except TransientError as exc:
                log.warning("attempt %d on %s failed (%s); retrying", number, adb.serial, exc)
                time.sleep(self.retry_wait_s)
                adb.reconnect()
        try:
            return attempt()
        except TransientError as exc:
            raise TransientError(f"{exc} (gave up after {self.retries + 1} attempts)") from exc
