"""ExecuTorch's `executor_runner` as a runner: its flags, its log → timings, its failures → one line.

On Android executor_runner logs through ET_LOG to logcat (tag ExecuTorch) and prints nothing on stdout or stderr;
only gflags complains on stderr. The session clears logcat before each run and reads the lines of the run's process
after it (upstream's devtools/scripts/benchmark_android.sh reads logcat the same way); a build that logs to stderr
(`I 00:00:00.002332 executorch:executor_runner.cpp:779] ...`) is read the same way. It has no warm-up flag: each run
executes warm-up + timed iterations and the first `warmup` are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from adb_bench.causes import clipped, crash, last_line, launch_failure, with_hint
from adb_bench.errors import DeviceError
from adb_bench.parse import Timings, log_messages, parse_executor_runner
from adb_bench.session import Run

BUILD_HINT = (
    "build it with the NDK from the ExecuTorch release that matches pip show executorch (README: Benchmark "
    "on your phone)"
)
TRACER_HINT = (
    "it was built without the event tracer; build one with -DEXECUTORCH_ENABLE_EVENT_TRACER=ON and "
    "-DEXECUTORCH_BUILD_DEVTOOLS=ON (README: Per-layer profile)"
)
UNKNOWN_FLAG = re.compile(r"ERROR: unknown command line flag '([^']+)'")
# a failed ET_CHECK (logged at level F, then abort) and the runner's own complaint about the program file
CHECK_FAILED = re.compile(r"^In function \w+\(\), assert failed \(.*?\): (.*)$")
NOT_PARSED = re.compile(r"^Failed to parse model file ")
HINTS = (
    (re.compile(r"Backend XnnpackBackend is not registered"),
     "rebuild the runner with -DEXECUTORCH_BUILD_XNNPACK=ON (README: Benchmark on your phone)"),
    (re.compile(r"Backend (\S+) is not registered"), "rebuild the runner with the {0} backend built in"),
    (re.compile(r"^Failed to open .*No such file or directory"),
     "the model is missing on the phone: rerun (it is pushed again) or check device.remote_dir"),
    (re.compile(r"Failed to parse model file "),
     "the file is not an ExecuTorch program this runner reads: build the runner from the ExecuTorch release that "
     "wrote it (pip show executorch), or delete the file's cache entry if it is damaged"),
)  # fmt: skip


@dataclass
class ExecutorRunner:
    """executor_runner's command line and how to read what it logs."""

    threads: int | None = None  # --cpu_threads; None = -1: its heuristic (the phone's big cores)
    name: str = "executor_runner"
    logcat: str | None = "ExecuTorch:I"

    def flags(self, model: str, input_shape: Sequence[int], warmup: int, iters: int) -> list[str]:
        """`--model_path --num_executions=warmup+iters --cpu_threads --print_output=none`; the .pte holds its input
        shape (the runner feeds all-ones inputs of it)."""
        threads = -1 if self.threads is None else self.threads
        return [f"--model_path={model}", f"--num_executions={warmup + iters}", f"--cpu_threads={threads}",
                "--print_output=none"]  # fmt: skip

    def trace_flags(self, dump: str) -> list[str]:
        """`--etdump_path`: a runner built with the event tracer (EXECUTORCH_ENABLE_EVENT_TRACER) writes every
        execution's operator times there after its last one."""
        return [f"--etdump_path={dump}"]

    def timings(self, run: Run) -> Timings:
        """The timed iterations of one run and its pool size; a run that failed raises DeviceError with its cause."""
        if run.result.code != 0:
            raise DeviceError(failure(run))
        return parse_executor_runner([m for _, m in log_messages(run.log + "\n" + run.result.err)], run.warmup)


def runtime_error(lines: list[tuple[str, str]]) -> str | None:
    """`<the runtime's last error> (<what stopped the runner>)` from its (level, message) log lines: a failed
    ET_CHECK or `Failed to parse model file ...`, after the error lines the runtime logged; None if neither."""
    for at in range(len(lines) - 1, -1, -1):
        check, message = CHECK_FAILED.match(lines[at][1]), lines[at][1]
        if check or NOT_PARSED.match(message):
            stopped = check[1] if check else message
            errors = [m for level, m in lines[:at] if level == "E"]
            return clipped(f"{errors[-1]} ({stopped})" if errors else stopped)
    return None


def failure(run: Run) -> str:
    """One line naming why a run exited non-zero: what gflags (stderr) or the runtime (logcat) said, else how it
    died (the shell, the linker, a signal)."""
    result, name = run.result, run.binary.rsplit("/", 1)[-1]
    lines = log_messages("\n".join((result.err, result.out, run.log)))
    text = "\n".join(m for _, m in lines)
    refused = launch_failure(result.code, text, run.binary, run.remote_dir)
    if refused:
        return refused
    if flag := UNKNOWN_FLAG.search(text):
        return f"{name} has no flag --{flag[1]}: {TRACER_HINT if flag[1] == 'etdump_path' else BUILD_HINT}"
    said = runtime_error(lines)
    if said:
        return with_hint(f"{name} stopped: {said}", HINTS, said)
    died = crash(result.code, text, name)
    if died:
        return died
    last = last_line(text, "no message")
    return f"{name} exited with {result.code}: {last}"
