"""LiteRT's `benchmark_model` (tflite/tools/benchmark) as a runner: its flags, its output → timings, its failures → one
line.

It logs with TFLITE_LOG: INFO and WARN lines on stdout (`INFO: ...`), ERROR lines on stderr (`ERROR: ...`), each also
to logcat under tag tflite; the runtime's own errors (model loading, missing ops) go to stderr through its minimal
logger in the same `ERROR: ` form. It prints no time per run, only statistics of its warm-up and timed runs
(`count=... avg=...`) and `Inference timings in us: ..., Inference (avg): X`: a session's run gives one sample, the
mean of its timed runs (adb_bench/parse.py parse_benchmark_model). `--min_secs=0 --warmup_min_secs=0` make it do
exactly `--warmup_runs` + `--num_runs` (by default it goes on for at least 1 s and 0.5 s). A flag it does not know is
not an error for it (`WARN: Unconsumed cmdline flags: ...`, exit 0); here it is one, since the run is not what was
asked for. A flag value it cannot read, a missing or unreadable model, a missing operator end with `ERROR:
Benchmarking failed.` and exit 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from adb_bench.causes import clipped, crash, last_line, launch_failure, with_hint
from adb_bench.errors import DeviceError
from adb_bench.parse import Timings, parse_benchmark_model
from adb_bench.session import Run

BUILD_HINT = (
    "download LiteRT's nightly android_aarch64_benchmark_model or build //tflite/tools/benchmark:benchmark_model "
    "with bazel --config=android_arm64 (README: Benchmark on your phone)"
)
UNCONSUMED = re.compile(r"Unconsumed cmdline flags: (.+)")
BAD_VALUE = re.compile(r"Failed to parse flag '([^']+)' against argv '([^']*)'")
NO_GRAPH = "Please specify the name of your TF Lite input file with --graph"
# the tool's own lines that say which step stopped it (after the runtime's error lines, if any)
STOPPED = re.compile(r"^(Failed to load model |Failed to initialize model loader with path |Failed to initialize the "
                     r"interpreter$|Failed to allocate tensors!$|Failed to apply \S+ delegate\.$|Failed to set thread "
                     r"number$|Disallowed CPU fallback detected\.$)")  # fmt: skip
NOT_A_CAUSE = ("Benchmarking failed.", "STARTING!")
PROGRESS = ("ERROR: Benchmarking failed.", "INFO: STARTING!")
HINTS = (
    (re.compile(r"^Could not open '"),
     "the model is missing on the phone: rerun (it is pushed again) or check device.remote_dir"),
    (re.compile(r"not a valid Flatbuffer|model identifier|must have at least 7 bytes"),
     "the file is not a .tflite this binary reads: delete its cache entry if it is damaged"),
    (re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'"),
     "this benchmark_model is older than the converter that wrote the file ({0} version {1}): use a newer one "
     "(LiteRT's nightly build, README)"),
    (re.compile(r"Failed to apply (\S+) delegate"),
     "the {0} delegate cannot take this model: add --use_xnnpack=false to device.tflite_args to time it without"),
)  # fmt: skip


@dataclass
class BenchmarkModel:
    """benchmark_model's command line and how to read what it prints."""

    threads: int | None = None  # --num_threads; None: the flag is left out (its default -1)
    extra_args: Sequence[str] = field(default_factory=list)  # device.tflite_args
    name: str = "benchmark_model"
    logcat: str | None = None  # it prints its timings on stdout

    def flags(self, model: str, input_shape: Sequence[int], warmup: int, iters: int) -> list[str]:
        """`--graph --warmup_runs --num_runs` with their minimum durations at 0 (exactly that many runs),
        `--use_xnnpack=true`, `--num_threads` (device.threads) and device.tflite_args; the .tflite holds its input
        shape (the tool feeds random inputs of it)."""
        threads = [] if self.threads is None else [f"--num_threads={self.threads}"]
        return [f"--graph={model}", *threads, f"--warmup_runs={warmup}", "--warmup_min_secs=0", f"--num_runs={iters}",
                "--min_secs=0", "--use_xnnpack=true", *map(str, self.extra_args)]  # fmt: skip

    def trace_flags(self, dump: str) -> None:
        """None: no ETDump (its --enable_op_profiling prints its own per-operator table, not read here)."""

    def timings(self, run: Run) -> Timings:
        """The mean of one run's timed runs (one sample per run) and its thread count; a run that failed, or ignored
        a flag, raises DeviceError with its one-line cause."""
        if run.result.code != 0:
            raise DeviceError(failure(run))
        if ignored := UNCONSUMED.search(run.result.out):
            raise DeviceError(f"benchmark_model ignored {ignored[1].strip()} (Unconsumed cmdline flags: this build has "
                              "no such flag): remove it from device.tflite_args")  # fmt: skip
        return parse_benchmark_model(run.result.out)


def error_lines(text: str) -> list[str]:
    """The messages of its `ERROR: ` lines (stderr), in order, without the closing `Benchmarking failed.`."""
    lines = [x.removeprefix("ERROR: ").strip() for x in text.replace("\r", "").splitlines() if x.startswith("ERROR: ")]
    return [x for x in lines if x and x not in NOT_A_CAUSE]


def stopped(errors: list[str]) -> str | None:
    """`<the runtime's first error> (<the step that stopped the tool>)`, or that step alone; None if none stopped it."""
    for at, message in enumerate(errors):
        if STOPPED.match(message):
            return clipped(f"{errors[0]} ({message})" if at else message)
    return None


def failure(run: Run) -> str:
    """One line naming why a run exited non-zero: the shell or the linker, a flag value it could not read, no
    --graph, the runtime's error and the step it stopped, a crash; else its last error line."""
    result, name = run.result, run.binary.rsplit("/", 1)[-1]
    text = result.err + "\n" + result.out
    refused = launch_failure(result.code, text, run.binary, run.remote_dir)
    if refused:
        return refused
    if bad := BAD_VALUE.search(text):
        return f"{name} could not read {bad[2]} (flag {bad[1]}): fix it in device.tflite_args"
    if NO_GRAPH in text:
        return f"{name} got no --graph: check device.tflite_args (--name=value, no bare values)"
    errors = error_lines(result.err)
    said = stopped(errors)
    if said:
        return with_hint(f"{name} stopped: {said}", HINTS, said)
    died = crash(result.code, text, name)
    if died:
        return died
    last = errors[-1] if errors else last_line(text, "no message", PROGRESS)
    return f"{name} exited with {result.code}: {clipped(last)}"

