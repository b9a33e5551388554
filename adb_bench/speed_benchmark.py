"""Runner for PyTorch's `speed_benchmark_torch` on the phone: install the binary, push a model, run, parse."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adb_bench.errors import CommandTimeout, DeviceError
from adb_bench.parse import Timings, parse_speed_benchmark
from adb_bench.transport import Adb, ShellResult, sha256_of

log = logging.getLogger(__name__)

# Run under `sh` that records its pid first, so a timed-out run can be killed by pid.
WITH_PIDFILE = 'echo $$ > "$1"; shift; exec "$@"'
KILL_PIDFILE = 'kill -9 "$(cat "$1")"'
BUILD_HINT = "build it with scripts/build_android.sh -DBUILD_BINARY=ON (README: Benchmark on your phone)"


@dataclass
class RunSettings:
    """What one `speed_benchmark_torch` run is asked to do (the flags and how long it may take)."""

    warmup: int = 10
    iters: int = 50
    input_type: str = "float"
    taskset: str | None = None
    extra_args: Sequence[str] = field(default_factory=list)
    timeout_s: float = 300.0


def flags(model: str, input_shape: Sequence[int], run: RunSettings) -> list[str]:
    return [
        f"--model={model}", f"--input_dims={','.join(str(d) for d in input_shape)}",
        f"--input_type={run.input_type}", f"--warmup={run.warmup}", f"--iter={run.iters}",
        "--report_pep=true", *map(str, run.extra_args),
    ]  # fmt: skip


def failure(result: ShellResult, binary: str) -> DeviceError:
    """What a non-zero exit of the binary means, as one actionable line."""
    text = result.err + "\n" + result.out
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    last = lines[-1] if lines else f"exit code {result.code}"
    version = re.search(r"model version must be between (\d+) and (\d+)", text)
    if version or "version number does not match" in text:
        newest = version[2] if version else "N"
        return DeviceError(
            f"model file rejected by speed_benchmark_torch: its bytecode version is newer than the binary supports "
            f"(max {newest}); export with export.bytecode_version={newest} or rebuild the binary from a newer PyTorch"
        )
    if "Failed to parse command line flags" in text:
        return DeviceError(f"speed_benchmark_torch rejected its flags (check device.extra_args): {last}")
    if re.search(r"exec format error|not executable|syntax error", text, re.IGNORECASE):
        return DeviceError(f"{binary} cannot run on this phone (wrong ABI? build with ANDROID_ABI=arm64-v8a): {last}")
    if result.code == 127 or "No such file" in text or "inaccessible or not found" in text:
        return DeviceError(f"{binary} is missing on the device: {last}")
    if result.code == 126 or "Permission denied" in text:
        return DeviceError(f"{binary} is not executable (is device.remote_dir on /data/local/tmp?): {last}")
    return DeviceError(f"speed_benchmark_torch exited with {result.code}: {last}")


class SpeedBenchmark:
    """`install()` once, then `measure(model, shape)` per file; models go to a fresh dir under `remote_dir`."""

    def __init__(self, adb: Adb, binary: Path, remote_dir: str, run: RunSettings, cleanup: bool = True):
        self.adb, self.binary, self.remote_dir, self.run, self.cleanup = adb, binary, remote_dir, run, cleanup
        self.remote_binary = f"{remote_dir.rstrip('/')}/{binary.name}"

    def install(self) -> None:
        """Push the binary unless the same file is already there; make it executable."""
        if self.adb.remote_sha256(self.remote_binary) == sha256_of(self.binary):
            return
        log.info("pushing %s to %s", self.binary, self.remote_binary)
        self.adb.check(["mkdir", "-p", self.remote_dir])
        self.adb.push(self.binary, self.remote_binary)
        self.adb.check(["chmod", "755", self.remote_binary])

    def measure(self, model_path: str | Path, input_shape: Sequence[int]) -> Timings:
        """Push the model to its own run dir, benchmark it, parse the output; the run dir is removed after."""
        run_dir = f"{self.remote_dir.rstrip('/')}/run-{uuid.uuid4().hex[:12]}"
        self.adb.check(["mkdir", "-p", run_dir])
        try:
            remote_model = f"{run_dir}/{Path(model_path).name}"
            self.adb.push(Path(model_path), remote_model)
            result = self._execute(run_dir, remote_model, input_shape)
        finally:
            if self.cleanup:
                self._remove(run_dir)
        if result.code != 0:
            raise failure(result, self.remote_binary)
        return parse_speed_benchmark(result.out)

    def _execute(self, run_dir: str, remote_model: str, input_shape: Sequence[int]) -> ShellResult:
        pidfile = f"{run_dir}/pid"
        pinned = ["taskset", self.run.taskset] if self.run.taskset else []
        argv = ["sh", "-c", WITH_PIDFILE, "sh", pidfile, *pinned, self.remote_binary]
        try:
            return self.adb.shell([*argv, *flags(remote_model, input_shape, self.run)], timeout=self.run.timeout_s)
        except CommandTimeout as exc:
            self._kill(pidfile)
            raise DeviceError(
                f"benchmark timed out after {self.run.timeout_s:g}s (device.timeout_s); raise it or lower device.iters"
            ) from exc

    def _kill(self, pidfile: str) -> None:
        try:
            self.adb.shell(["sh", "-c", KILL_PIDFILE, "sh", pidfile], timeout=15)
        except DeviceError as exc:
            log.warning("could not stop the timed-out benchmark: %s", exc)

    def _remove(self, run_dir: str) -> None:
        try:
            self.adb.shell(["rm", "-rf", run_dir], timeout=30)
        except DeviceError as exc:
            log.warning("could not remove %s from the device: %s", run_dir, exc)
