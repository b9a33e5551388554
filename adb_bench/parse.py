"""Pure parsers of what the benchmark binaries print or log → latencies in microseconds: speed_benchmark_torch's
stdout, executor_runner's log (logcat lines on Android, prefixed stderr lines on a host), one per iteration; LiteRT's
benchmark_model stdout, one per run (it prints only statistics of its runs)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from adb_bench.causes import last_line
from adb_bench.errors import DeviceError

OBSERVER = re.compile(r"PyTorchObserver\s+(\{.*\})")
SUMMARY = re.compile(r"Main run finished\. Microseconds per iter: ([-+\w.]+)\. Iters per second")
UNIT_US = {"us": 1.0, "ms": 1e3, "ns": 1e-3, "s": 1e6}
# a log line's prefix: logcat's threadtime format (`MM-DD HH:MM:SS.mmm  PID  TID L TAG: `) or an ExecuTorch host
# build's (`L HH:MM:SS.uuuuuu executorch:FILE:LINE] `); L is the level (V D I W E F)
LOG_PREFIX = re.compile(r"^(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+ ([VDIWEF]) [^:]*: "
                        r"|([VDIWEF]) \d\d:\d\d:\d\d\.\d+ executorch:[^\]\s]*\] )")  # fmt: skip
ITERATION = re.compile(r"^Iteration (\d+) of (\d+): ([\d.]+) ms$")
TOTAL = re.compile(r"^Model executed successfully (\d+) time\(s\) in ([\d.]+) ms\.$")
POOL = re.compile(r"^Resetting threadpool with num threads = (-?\d+)$")


class GarbledOutput(DeviceError):
    """The binary exited 0 but printed no latency we can read."""


@dataclass(frozen=True)
class Timings:
    samples_us: list[float]
    source: str  # one sample per iteration: "observer" (PyTorchObserver lines), "log" (Iteration lines); "summary":
    # only the mean was printed
    threads: int | None = None  # the thread count the binary said it used, None when it says nothing


def _observer_sample(payload: str) -> float | None:
    """The latency in µs of one `PyTorchObserver {...}` payload, None for other observer records."""
    try:
        record = json.loads(payload)
    except json.JSONDecodeError:
        return None
    if record.get("type") != "NET" or record.get("metric") != "latency" or record.get("unit") not in UNIT_US:
        return None
    try:
        return float(record["value"]) * UNIT_US[record["unit"]]  # value is a string like "1.23457e+06"
    except (KeyError, TypeError, ValueError):
        return None


def summary_us(text: str) -> float | None:
    """The `Main run finished. Microseconds per iter: X` mean (`inf` after `--iter=0`), None when absent."""
    match = SUMMARY.search(text)
    try:
        return float(match[1]) if match else None
    except ValueError:
        return None


def parse_speed_benchmark(text: str) -> Timings:
    """Every PyTorchObserver latency line; else the `Microseconds per iter` summary; else GarbledOutput."""
    samples = [s for m in OBSERVER.finditer(text) if (s := _observer_sample(m[1])) is not None]
    if samples:
        return Timings(samples, "observer")
    mean = summary_us(text)
    if mean is not None and math.isfinite(mean):
        return Timings([mean], "summary")
    if mean is not None:
        raise GarbledOutput("speed_benchmark_torch ran no timed iteration (Microseconds per iter: inf): "
                            "set device.iters to at least device.rounds")  # fmt: skip
    last = last_line(text, "<no output>")
    raise GarbledOutput(f"no latency in speed_benchmark_torch output (no PyTorchObserver line, no summary): {last}")


def log_messages(text: str) -> list[tuple[str, str]]:
    """(level, message) of every log line, its logcat or host-build prefix removed; level is '' for a line without
    one (e.g. gflags on stderr); logcat's `--------- beginning of main` dividers are dropped."""
    found = []
    for line in text.replace("\r", "").splitlines():
        prefix = LOG_PREFIX.match(line)
        if line.strip() and not line.startswith("--------- "):
            level = (prefix[1] or prefix[2]) if prefix else ""
            found.append((level, line[prefix.end() :].rstrip() if prefix else line.strip()))
    return found


def pool_size(messages: list[str]) -> int | None:
    """The thread count executor_runner reset its pool to (`--cpu_threads`, or for -1 the big cores it found); None
    when it logs none or found none (0: the pool keeps its default size)."""
    sizes = [int(m[1]) for m in map(POOL.match, messages) if m]
    return sizes[-1] if sizes and sizes[-1] > 0 else None


def parse_executor_runner(messages: list[str], warmup: int) -> Timings:
    """The `Iteration i of N: x ms` latencies after the first `warmup` (executor_runner has no warm-up flag), never
    the `Model executed successfully N time(s) in T ms` line (a sum over all N, warm-up included); else
    GarbledOutput saying why there are none."""
    iterations = {int(m[1]): (int(m[2]), float(m[3])) for m in map(ITERATION.match, messages) if m}
    if not iterations:
        total = next((m for m in map(TOTAL.match, messages) if m), None)
        if total:
            raise GarbledOutput(
                f"executor_runner logged only its total ({total[0]}: all runs, warm-up included), no 'Iteration i of "
                "N' line: build it from the ExecuTorch release that matches pip show executorch"
            )
        raise GarbledOutput(
            "no latency from executor_runner: logcat holds no 'Iteration i of N' line under tag ExecuTorch (a build "
            "without -DEXECUTORCH_ENABLE_LOGGING=ON logs nothing; adb shell getprop log.tag.ExecuTorch must be empty "
            "or V, D or I)"
        )
    runs = max(n for n, _ in iterations.values())
    timed = [iterations[i][1] * 1e3 for i in range(warmup + 1, runs + 1) if i in iterations]
    if len(timed) < runs - warmup:
        raise GarbledOutput(
            f"logcat kept {len(timed)} of the {runs - warmup} timed 'Iteration i of {runs}' lines of executor_runner "
            "(its buffer overflowed): enlarge it with adb logcat -G 16M or lower device.iters"
        )
    return Timings(timed, "log", pool_size(messages))


# LiteRT's benchmark_model (tflite/tools/benchmark): TFLITE_LOG(INFO) lines on stdout, `INFO: ` first (logcat tag tflite
# holds the same messages without it). Its runs' statistics: `count=N first=F curr=C min=A max=B avg=M std=S`, or
# `count=N curr=C` when all were the same (`(all same)` after C when N > 1), newer builds add ` p5=.. median=.. p95=..`
# (tsl::Stat / StatWithPercentiles::OutputToStream); one line for the warm-up runs, then one for the timed runs.
TFLITE_STATS = re.compile(r"^(?:INFO: )?count=(\d+)(?:(?: first=\S+)? curr=([-+.\deE]+)(?:\(all same\))?"
                          r"(?: min=\S+ max=\S+ avg=(\S+) std=\S+)?)?(?: p5=.*)?$", re.MULTILINE)  # fmt: skip
TFLITE_TIMINGS = re.compile(r"Inference timings in us: Init: \S+, First inference: \S+, Warmup \(avg\): \S+, "
                            r"Inference \(avg\): ([-+.\w]+)")  # fmt: skip
TFLITE_OLD_TIMINGS = re.compile(r"Average inference timings in us: Warmup: \S+, Init: \S+, Inference: ([-+.\w]+)")
TFLITE_THREADS = re.compile(r"^(?:INFO: )?Num threads: \[(-?\d+)\]$", re.MULTILINE)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def benchmark_model_threads(text: str) -> int | None:
    """The `--num_threads` benchmark_model says it ran with (`Num threads: [N]`, printed when the flag is given);
    None when it printed none or -1 (the runtime's own choice)."""
    found = [int(m[1]) for m in TFLITE_THREADS.finditer(text)]
    return found[-1] if found and found[-1] > 0 else None


def parse_benchmark_model(text: str) -> Timings:
    """One sample per run: the mean of its timed runs in µs (`Inference (avg)` of `Inference timings in us`, else
    the avg — or curr when all were the same — of its last `count=` line); GarbledOutput when there is none or the
    run timed nothing (count=0)."""
    stats = list(TFLITE_STATS.finditer(text))
    timed = stats[-1] if stats else None
    if timed and int(timed[1]) == 0:
        raise GarbledOutput("benchmark_model ran no timed run (count=0): set device.iters to at least device.rounds, "
                            "and no --dry_run or --num_runs in device.tflite_args")  # fmt: skip
    summary = TFLITE_TIMINGS.search(text) or TFLITE_OLD_TIMINGS.search(text)
    mean = _number(summary[1]) if summary else None
    if mean is None and timed:
        mean = _number(timed[3] or timed[2])
    if mean is None or not math.isfinite(mean) or mean < 0:
        last = last_line(text, "<no output>")
        raise GarbledOutput(f"no latency in benchmark_model output (no 'Inference timings in us' line, no count= "
                            f"line): {last}")  # fmt: skip
    return Timings([mean], "summary", benchmark_model_threads(text))
