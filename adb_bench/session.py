"""One benchmark session on one phone: install the files' binaries (and device.push_libs) once, push each file
once, run the files round-robin, each with its own binary, optionally sample the battery's current and voltage while
they run, clean up. A binary that logs its timings (executor_runner) gets logcat cleared before each run and its
process's log lines read after it.

Round r runs every file once with `warmup` untimed and its share of `iters` timed iterations; the order
is reversed every other round (A B, B A, A B, ...) so a phone that warms up over the session does not
favour one file. Each run is a new process of the binary, so each does its own warm-up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from adb_bench.energy import EnergySettings
from adb_bench.errors import CommandTimeout, DeviceError
from adb_bench.memory import high_water_kb
from adb_bench.parse import Timings
from adb_bench.transport import Adb, ShellResult, sha256_of

log = logging.getLogger(__name__)

# $1 pid file, $2 library dir ('' = none), $3 power file ('' = no sampling), $4 sampling interval,
# $5 current_now, $6 voltage_now, $7 memory file, then the command. The command's pid goes to the pid file (a
# timed-out run is killed by it); while it runs, a loop appends `current voltage` lines to the power file (and
# stops rather than spin where `sleep` takes no fractions), and another appends the command's `VmHWM:` from its
# /proc/PID/status to the memory file whenever it grew, every 0.1 s with the shell's builtins (no process per read:
# the benchmark's cores stay its own); the kernel's high-water mark only grows, so the last line is the run's peak up
# to its last 0.1 s. The watcher is stopped when the command ends; a /proc that hides the mark leaves the file empty.
RUN = """pidfile=$1 libdir=$2 power=$3 every=$4 current=$5 voltage=$6 memory=$7; shift 7
if [ -n "$libdir" ]; then export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
if [ -n "$power" ]; then
  while read c < "$current" && read v < "$voltage"; do
    echo "$c $v"; sleep "$every" || break
  done >"$power" 2>/dev/null &
  sampler=$!
fi
"$@" &
pid=$!
echo $pid > "$pidfile"
: > "$memory"
while :; do
  while read -r key kb unit; do
    if [ "$key" = VmHWM: ] && [ "$kb" != "$last" ]; then echo "VmHWM: $kb kB" >> "$memory"; last=$kb; fi
  done < /proc/$pid/status
  sleep 0.1 2>/dev/null || sleep 1
done 2>/dev/null &
watcher=$!
wait $pid
code=$?
kill $watcher 2>/dev/null
wait $watcher 2>/dev/null
if [ -n "$power" ]; then kill "$sampler"; fi
exit $code"""
KILL = 'kill -9 "$(cat "$1")"'
# $1 pid file, $2 logcat filter: what the run's process logged (logcat of Android 7+ filters by pid)
LOGCAT = 'logcat -d --pid="$(cat "$1")" -s "$2"'


@dataclass(frozen=True)
class Run:
    """One finished run of a benchmark binary: what the shell returned, the logcat lines its process left (empty
    when its runner reads none), the binary's path on the phone, the session's folder there, its warm-up."""

    result: ShellResult
    log: str
    binary: str
    remote_dir: str
    warmup: int


class Runner(Protocol):
    """What a session needs from a benchmark binary (SpeedBenchmarkTorch in adb_bench/speed_benchmark.py,
    ExecutorRunner in adb_bench/executor_runner.py): its command line, and its timings or failure from a run."""

    name: str
    logcat: str | None  # the logcat filter its timings are read with (e.g. ExecuTorch:I); None: it prints them

    def flags(self, model: str, input_shape: Sequence[int], warmup: int, iters: int) -> list[str]: ...

    def timings(self, run: Run) -> Timings: ...

    def trace_flags(self, dump: str) -> list[str] | None: ...  # a run that writes its operators' times to `dump`


@dataclass(frozen=True)
class Binary:
    """A benchmark binary on this machine and the Runner that drives it."""

    local: Path
    runner: Runner


@dataclass(frozen=True)
class RunSettings:
    """How a session runs: warm-up per run, timed iterations per file, rounds, CPU pinning, time limit per run."""

    warmup: int = 10
    iters: int = 50
    rounds: int = 5
    taskset: str | None = None
    timeout_s: float = 300.0


@dataclass
class FileRuns:
    """What one file got in a session: latencies (µs) of every run and how many each run gave, their source, the
    power sample lines, the peak memory of its runs (both read once, after the session's runs)."""

    samples_us: list[float] = field(default_factory=list)
    round_sizes: list[int] = field(default_factory=list)  # samples of each run, in the order they ran
    sources: set[str] = field(default_factory=set)
    power_files: list[str] = field(default_factory=list)
    power_text: str = ""
    threads: int | None = None  # what the binary said it ran on, None when it says nothing
    memory_files: list[str] = field(default_factory=list)  # the VmHWM lines of each run
    peak_kb: int | None = None  # the highest VmHWM of its runs, None where the phone's /proc showed none

    @property
    def source(self) -> str:
        """The timings' source (`observer`, `log`: one sample per iteration), `summary` when some run printed only
        its mean."""
        return "summary" if "summary" in self.sources else ",".join(sorted(self.sources))


def iteration_shares(iters: int, rounds: int) -> list[int]:
    """`iters` split over `rounds` as evenly as possible: 10 over 3 → [4, 3, 3]."""
    return [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]


def run_order(files: int, rounds: int) -> list[tuple[int, int]]:
    """(round, file index) in the order they run: forward in even rounds, backward in odd ones."""
    return [(r, i if r % 2 == 0 else files - 1 - i) for r in range(rounds) for i in range(files)]


class Session:
    """`install(binaries)` then `measure(files, shape, energy)` on one phone (the caller holds its lock)."""

    def __init__(self, adb: Adb, libs: Sequence[Path], remote_dir: str, runs: RunSettings, cleanup: bool = True):
        self.adb, self.libs, self.runs = adb, list(libs), runs
        self.remote_dir, self.cleanup = remote_dir.rstrip("/"), cleanup

    def remote(self, local: Path) -> str:
        """Where a binary or library lives on the phone."""
        return f"{self.remote_dir}/{local.name}"

    def install(self, binaries: Sequence[Binary]) -> None:
        """Push the binaries and the libraries unless the same files are already there; binaries executable."""
        executables = list(dict.fromkeys(b.local for b in binaries))
        for local in [*executables, *self.libs]:
            remote = self.remote(local)
            if self.adb.remote_sha256(remote) == sha256_of(local):
                continue
            log.info("pushing %s to %s", local, remote)
            self.adb.check(["mkdir", "-p", self.remote_dir])
            self.adb.push(local, remote)
            if local in executables:
                self.adb.check(["chmod", "755", remote])

    def measure(self, files: Sequence[tuple[str, Binary]], input_shape: Sequence[int], energy: EnergySettings | None
                ) -> tuple[list[FileRuns], str]:  # fmt: skip
        """Each file's runs with its binary, and the idle power sample lines (empty without energy); the run dir is
        removed after."""
        run_dir = f"{self.remote_dir}/run-{uuid.uuid4().hex[:12]}"
        self.adb.check(["mkdir", "-p", run_dir])
        try:
            remotes = [f"{run_dir}/{i}-{Path(p).name}" for i, (p, _) in enumerate(files)]
            for (local, _), remote in zip(files, remotes, strict=True):
                self.adb.push(Path(local), remote)
            idle = self._idle_power(run_dir, energy) if energy else ""
            runs = [FileRuns() for _ in files]
            shares = iteration_shares(self.runs.iters, self.runs.rounds)
            for r, i in run_order(len(files), self.runs.rounds):
                power = f"{run_dir}/{i}-{r}.power" if energy else ""
                self._time(runs[i], (remotes[i], files[i][1]), input_shape, shares[r], run_dir, power, energy,
                           f"{run_dir}/{i}-{r}.memory")  # fmt: skip
            for file_runs in runs:
                file_runs.peak_kb = high_water_kb(self.adb.check(["cat", *file_runs.memory_files]))
                if energy:
                    file_runs.power_text = self.adb.check(["cat", *file_runs.power_files])
            return runs, idle
        finally:
            if self.cleanup:
                self._remove(run_dir)

    def trace(self, files: Sequence[tuple[str, Binary]], input_shape: Sequence[int], folder: Path) -> list[dict]:
        """One run of each file with its binary's event tracer on (`warmup` + `iters` executions), the dump pulled
        into `folder`: {"etdump": path, "skip": warmup} per file, or {"error": why} for a file whose binary traces
        nothing or whose run failed (the other files go on). The run dir is removed after."""
        run_dir = f"{self.remote_dir}/trace-{uuid.uuid4().hex[:12]}"
        self.adb.check(["mkdir", "-p", run_dir])
        try:
            return [self._trace(i, file, input_shape, run_dir, Path(folder)) for i, file in enumerate(files)]
        finally:
            if self.cleanup:
                self._remove(run_dir)

    def _trace(self, i: int, file: tuple[str, Binary], input_shape: Sequence[int], run_dir: str, folder: Path
               ) -> dict:  # fmt: skip
        local, binary = file
        runner, model, dump = binary.runner, f"{run_dir}/{i}-{Path(local).name}", f"{run_dir}/{i}.etdp"
        tracing = runner.trace_flags(dump)
        if tracing is None:
            return {"error": f"{runner.name} has no per-operator profiler (README: Per-layer profile)"}
        self.adb.push(Path(local), model)
        flags = [*runner.flags(model, input_shape, self.runs.warmup, self.runs.iters), *tracing]
        try:
            self._run_binary(run_dir, binary, flags, "", None, f"{run_dir}/{i}.memory")
            self.adb.pull(dump, folder / f"{i}.etdp")
        except DeviceError as exc:
            return {"error": str(exc)}
        return {"etdump": str(folder / f"{i}.etdp"), "skip": self.runs.warmup}

    def _time(self, runs: FileRuns, file: tuple[str, Binary], input_shape: Sequence[int], iters: int, run_dir: str,
              power: str, energy: EnergySettings | None, memory: str) -> None:  # fmt: skip
        """One run of the file's binary on it (its remote path): its latencies (and power and memory files) added to
        `runs`."""
        model, binary = file
        flags = binary.runner.flags(model, input_shape, self.runs.warmup, iters)
        timings = self._run_binary(run_dir, binary, flags, power, energy, memory)
        runs.samples_us += timings.samples_us
        runs.round_sizes.append(len(timings.samples_us))
        runs.sources.add(timings.source)
        runs.threads = timings.threads
        runs.power_files += [power] if power else []
        runs.memory_files.append(memory)

    def _run_binary(self, run_dir: str, binary: Binary, flags: list[str], power: str, energy: EnergySettings | None,
                    memory: str) -> Timings:  # fmt: skip
        """One run of `binary` (pinned to device.taskset) with `flags` under the RUN wrapper, its log read when it
        logs: its timings; DeviceError with the cause when the run failed."""
        runner, remote = binary.runner, self.remote(binary.local)
        pinned = ["taskset", self.runs.taskset] if self.runs.taskset else []
        if runner.logcat:
            self.adb.check(["logcat", "-c"])
        result = self._run(run_dir, [*pinned, remote, *flags], power, energy, memory)
        logged = self.adb.check(["sh", "-c", LOGCAT, "sh", f"{run_dir}/pid", runner.logcat]) if runner.logcat else ""
        return runner.timings(Run(result, logged, remote, self.remote_dir, self.runs.warmup))

    def _idle_power(self, run_dir: str, energy: EnergySettings) -> str:
        """Power sample lines of `energy.idle_s` seconds of the phone doing nothing (the baseline)."""
        power = f"{run_dir}/idle.power"
        self._run(run_dir, ["sleep", f"{energy.idle_s:g}"], power, energy, f"{run_dir}/idle.memory")
        return self.adb.check(["cat", power])

    def _run(self, run_dir: str, command: list[str], power: str, energy: EnergySettings | None, memory: str
             ) -> ShellResult:  # fmt: skip
        """One command under the RUN wrapper; a run over device.timeout_s is killed and raises DeviceError."""
        pidfile = f"{run_dir}/pid"
        libdir = self.remote_dir if self.libs else ""
        probe = [f"{energy.interval_s:g}", *energy.paths] if energy and power else ["", "", ""]
        try:
            return self.adb.shell(["sh", "-c", RUN, "sh", pidfile, libdir, power, *probe, memory, *command],
                                  timeout=self.runs.timeout_s)  # fmt: skip
        except CommandTimeout as exc:
            self._kill(pidfile)
            raise DeviceError(
                f"benchmark timed out after {self.runs.timeout_s:g}s (device.timeout_s); raise it or lower device.iters"
            ) from exc
        except BaseException:  # the stage was stopped (its time limit, SIGTERM) or interrupted: stop the phone's run
            self._kill(pidfile)
            raise

    def _kill(self, pidfile: str) -> None:
        try:
            self.adb.shell(["sh", "-c", KILL, "sh", pidfile], timeout=15)
        except DeviceError as exc:
            log.warning("could not stop the timed-out benchmark: %s", exc)

    def _remove(self, run_dir: str) -> None:
        try:
            self.adb.shell(["rm", "-rf", run_dir], timeout=30)
        except DeviceError as exc:
            log.warning("could not remove %s from the device: %s", run_dir, exc)
