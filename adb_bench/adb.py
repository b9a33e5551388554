"""The `adb` device: benchmarks each exported file on an attached Android phone with speed_benchmark_torch."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from adb_bench.errors import DeviceError, TransientError
from adb_bench.fingerprint import battery_temp_c, cool_down, read_fingerprint
from adb_bench.lock import device_lock
from adb_bench.parse import Timings
from adb_bench.speed_benchmark import BUILD_HINT, RunSettings, SpeedBenchmark
from adb_bench.stats import summarize_ms
from adb_bench.transport import Adb, sha256_of

log = logging.getLogger(__name__)
T = TypeVar("T")


def local_binary(binary: str | None) -> Path:
    if not binary:
        raise DeviceError(f"device.binary is not set: point it at speed_benchmark_torch for the phone; {BUILD_HINT}")
    path = Path(os.path.expanduser(binary))
    if not path.is_file():
        raise DeviceError(f"speed_benchmark_torch not found at {str(path)!r}: {BUILD_HINT}, set device.binary=PATH")
    return path


class AdbDevice:
    """One phone: `identity()` (what ran, for the cache and the row) and `benchmark(file, shape)` (latencies)."""

    def __init__(self, binary: str | None = None, adb: str = "adb", serial: str | None = None,
                 server_host: str | None = None, server_port: int | None = None,
                 remote_dir: str = "/data/local/tmp/pocketbench", warmup: int = 10, iters: int = 50,
                 input_type: str = "float", taskset: str | None = None, extra_args: Sequence[str] = (),
                 timeout_s: float = 300.0, retries: int = 2, retry_wait_s: float = 2.0, cleanup: bool = True,
                 cooldown: dict | None = None, lock_dir: str | None = None, qengine: str = "qnnpack"):  # fmt: skip
        self.binary, self.retries, self.retry_wait_s = binary, retries, retry_wait_s
        self.cooldown, self.lock_dir, self.qengine = cooldown or {}, lock_dir, qengine
        self.run = RunSettings(warmup, iters, input_type, taskset, list(extra_args), timeout_s)
        self.adb_options = {"exe": adb, "serial": serial, "host": server_host, "port": server_port}
        self.remote_dir, self.cleanup = remote_dir, cleanup
        self._identity: dict | None = None

    def identity(self) -> dict:
        """Phone fingerprint, binary checksum and run settings (the benchmark cache key); adb is asked once."""
        if self._identity is None:
            binary = local_binary(self.binary)
            self.adb = Adb(**self.adb_options)
            serial = self.adb.select()
            self.runner = SpeedBenchmark(self.adb, binary, self.remote_dir, self.run, self.cleanup)
            self._identity = {"device_serial": serial, **read_fingerprint(self.adb)} | {
                "binary_sha256": sha256_of(binary), "warmup": self.run.warmup, "iters": self.run.iters,
                "input_type": self.run.input_type, "taskset": self.run.taskset,
                "extra_args": list(self.run.extra_args), "qengine": self.qengine,
            }  # fmt: skip
            self._identity["device"] = f"adb:{self._identity['device_model'] or serial}"
        return self._identity

    def benchmark(self, model_path: str, input_shape: Sequence[int]) -> dict:
        """Latency of one file on the phone, holding the phone's lock; transient adb failures are retried."""
        ident = self.identity()
        with device_lock(self.lock_dir, ident["device_serial"]):
            waited = self._cool_down()
            before, timings, after = self._retrying(lambda: self._measure(model_path, input_shape))
        row = summarize_ms([us / 1e3 for us in timings.samples_us])
        if timings.source == "summary":
            row["iters"] = self.run.iters  # only the mean was printed: p50/p90/min/std are that mean
        keep = ("device", "device_serial", "device_model", "device_soc", "device_board", "device_abi", "android")
        return row | {k: ident[k] for k in keep} | {
            "threads": bin(int(self.run.taskset, 16)).count("1") if self.run.taskset else None,
            "qengine": self.qengine, "taskset": self.run.taskset, "latency_source": timings.source,
            "battery_temp_c_before": before, "battery_temp_c_after": after, "cooldown_s": waited,
        }  # fmt: skip

    def _measure(self, model_path: str, input_shape: Sequence[int]) -> tuple[float | None, Timings, float | None]:
        """One attempt: battery temperature, install the binary if needed, run, temperature again."""
        before = battery_temp_c(self.adb)
        self.runner.install()
        timings = self.runner.measure(model_path, input_shape)
        return before, timings, battery_temp_c(self.adb)

    def _cool_down(self) -> float:
        if self.cooldown.get("max_temp_c") is None:
            return 0.0
        limits = [float(self.cooldown.get(k, d)) for k, d in (("max_temp_c", 0), ("max_wait_s", 300), ("poll_s", 10))]
        return cool_down(lambda: battery_temp_c(self.adb), *limits)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        for number in range(1, self.retries + 1):
            try:
                return attempt()
            except TransientError as exc:
                log.warning("attempt %d on %s failed (%s); retrying", number, self.adb.serial, exc)
                time.sleep(self.retry_wait_s)
                self.adb.reconnect()
        try:
            return attempt()
        except TransientError as exc:
            raise TransientError(f"{exc} (gave up after {self.retries + 1} attempts)") from exc
