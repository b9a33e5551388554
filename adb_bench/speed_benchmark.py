"""PyTorch's `speed_benchmark_torch` as a runner: its flags, its output → timings, its failures → one line.

A runner is what a session needs to know about one benchmark binary (adb_bench.session.Runner); ExecuTorch's
executor_runner is the other one (adb_bench/executor_runner.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from adb_bench.causes import crash, last_line, launch_failure, signal_name, with_hint
from adb_bench.errors import DeviceError
from adb_bench.parse import Timings, parse_speed_benchmark, summary_us
from adb_bench.session import Run
from adb_bench.transport import ShellResult

BUILD_HINT = "build it with scripts/build_android.sh -DBUILD_BINARY=ON (README: Benchmark on your phone)"
PROGRESS = ("Starting benchmark.", "Running warmup runs.", "Main runs.", "Parsing commandline arguments for c10.")
# c10's flag parser (c10/util/flags_use_no_gflags.cpp) writes these to stderr, then the binary adds
# "Failed to parse command line flags!"; after a bare last flag upstream prints no newline before it.
UNKNOWN_FLAG = re.compile(r"C10 flag: unrecognized commandline argument: (.+)")
NO_VALUE = re.compile(r"I am expecting a value for (--\S+?)(?:Failed to parse command line flags!)?$", re.MULTILINE)
BAD_BOOL = re.compile(r"Cannot convert argument to bool: (.*)\n(?:.*\n)*?C10 flag: illegal argument: (.+)")
ILLEGAL = re.compile(r"C10 flag: illegal argument: (.+)")
# what to do about the causes a user can fix from the config
HINTS = (
    (re.compile(r"model version must be between \d+ and (\d+)"),
     "the file's bytecode is newer than the binary reads: export with export.bytecode_version={0} or rebuild the "
     "binary from a newer PyTorch"),
    (re.compile(r"failed locating file bytecode\.pkl"),
     "this is a full-JIT TorchScript file, not a lite-interpreter .ptl: export it with the ptl format"),
    (re.compile(r"failed finding central directory|failed reading zip archive"),
     "the file is truncated or not a .ptl: delete its cache entry and rerun"),
    (re.compile(r"\) and (?:bias|weight) type \(.*should be the same|expected scalar type|Unsupported input type"),
     "set device.input_type to what the model takes (float for float and int8 models)"),
    (re.compile(r"^stoi|Input dims and (?:type|format) should have the same number of items"),
     "check --input_dims/--input_type/--input_memory_format in device.extra_args"),
)  # fmt: skip


@dataclass
class SpeedBenchmarkTorch:
    """speed_benchmark_torch's command line and how to read what it prints."""

    input_type: str = "float"
    extra_args: Sequence[str] = field(default_factory=list)
    name: str = "speed_benchmark_torch"
    logcat: str | None = None  # it prints its timings on stdout

    def trace_flags(self, dump: str) -> None:
        """None: the lite interpreter has no per-operator profiler over adb."""

    def flags(self, model: str, input_shape: Sequence[int], warmup: int, iters: int) -> list[str]:
        """`--model --input_dims --input_type --warmup --iter --report_pep=true` and device.extra_args."""
        return [
            f"--model={model}", f"--input_dims={','.join(str(d) for d in input_shape)}",
            f"--input_type={self.input_type}", f"--warmup={warmup}", f"--iter={iters}", "--report_pep=true",
            *map(str, self.extra_args),
        ]  # fmt: skip

    def timings(self, run: Run) -> Timings:
        """Per-iteration latencies of one run; a run that failed raises DeviceError with its one-line cause."""
        if run.result.code != 0:
            raise DeviceError(failure(run.result, run.binary, run.remote_dir))
        return parse_speed_benchmark(run.result.out)


def flag_error(text: str) -> str | None:
    """Which flag c10 rejected, and how to fix it in device.extra_args; None when no flag was rejected."""
    if match := UNKNOWN_FLAG.search(text):
        return f"speed_benchmark_torch has no flag {match[1]}: remove it from device.extra_args"
    if match := NO_VALUE.search(text):
        return f"speed_benchmark_torch flag {match[1]} needs a value: write {match[1]}=true in device.extra_args"
    if match := BAD_BOOL.search(text):
        return (f"speed_benchmark_torch flag {match[2]} took {match[1]!r} as its value: write {match[2]}=true "
                f"(bool flags need =true/=false) in device.extra_args")  # fmt: skip
    if match := ILLEGAL.search(text):
        return f"speed_benchmark_torch rejected the flag {match[1]}: fix it in device.extra_args"
    if "Failed to parse command line flags!" in text:
        return "speed_benchmark_torch rejected its flags: check device.extra_args (--name=value)"
    return None


def failure(result: ShellResult, binary: str, remote_dir: str) -> str:
    """One line naming why a run exited non-zero (never a progress line or a backtrace frame)."""
    text = result.err + "\n" + result.out
    name = binary.rsplit("/", 1)[-1]
    refused = launch_failure(result.code, text, binary, remote_dir) or flag_error(text)
    if refused:
        return refused
    summary = summary_us(result.out)
    if summary is not None:
        died = ", ".join(filter(None, (signal_name(result.code), f"exit {result.code}")))
        return f"{name} printed a result, then crashed on exit ({died}): the run is not trusted; rerun it"
    died = crash(result.code, text, name)
    if died:
        return with_hint(died, HINTS, died.split(": ", 1)[-1])  # the exception's message, not its type
    return f"{name} exited with {result.code}: {last_line(text, 'no message', PROGRESS)}"
