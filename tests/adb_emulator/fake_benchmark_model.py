"""Test stand-in for LiteRT's benchmark_model (tflite/tools/benchmark) built for Android: the real program's texts,
streams and exit codes, running the .tflite with LiteRT's own interpreter (ai_edge_litert, XNNPACK).

TFLITE_LOG writes INFO/WARN lines on stdout (`INFO: ...`) and ERROR lines on stderr (`ERROR: ...`); the runtime's
error reporter and minimal logger write `ERROR: ...` / `INFO: ...` on stderr (the logcat copies of both, tag tflite,
are not reproduced). Flags are `--name=value` only (tflite/tools/command_line_flags.cc): a value it cannot read prints
`Failed to parse flag 'NAME' against argv 'ARG'` and the usage (every flag: `--name=default`, type, optional, help;
this stand-in lists its own subset of the real flags) as an ERROR; a flag it does not know stays unconsumed: `WARN:
Unconsumed cmdline flags: ...` and the run goes on. Then the set parameters (`Min num runs: [N]`, ...), the model
(`Could not open 'P'.`, `The model allocation is null/empty` or the verifier's `The model is not a valid Flatbuffer
buffer`, then `Failed to load model P`), XNNPACK applied (`--use_xnnpack=true`), the input file size, the init time,
the warm-up and timed runs (at least N runs and S seconds, at most --max_secs; `count=... p5=... median=... p95=...`
of their µs, as tsl::StatWithPercentiles prints them, then an empty line), `Inference timings in us: ...` and the
memory footprint lines. Any failure ends with `ERROR: Benchmarking failed.` and exit 1.

Runs, battery current and faults as in adb_emulator/stand_in.py (`segv_in_main`: after the first timed run); the
model runs in a fork of the zygote.
"""

import math
import os
import re
import sys
import time

from adb_emulator.stand_in import crash_here, end_run, run_work, start_run

# (name, type, default, usage) of the flags this stand-in knows, in the real tool's order: BenchmarkModel's,
# BenchmarkTfLiteModel's, then the delegate providers' (num_threads is registered twice there too)
FLAGS = [
    ("num_runs", "int32", 50, "expected number of runs, see also min_secs, max_secs"),
    ("min_secs", "float", 1.0, "minimum number of seconds to rerun for, potentially making the actual number of runs "
                               "to be greater than num_runs"),
    ("max_secs", "float", 150.0, "maximum number of seconds to rerun for, potentially making the actual number of "
                                 "runs to be less than num_runs. Note if --max-secs is exceeded in the middle of a "
                                 "run, the benchmark will continue to the end of the run but will not start the next "
                                 "run."),
    ("run_delay", "float", -1.0, "delay between runs in seconds"),
    ("num_threads", "int32", -1, "number of threads"),
    ("warmup_runs", "int32", 1, "minimum number of runs performed on initialization, to allow performance "
                                "characteristics to settle, see also warmup_min_secs"),
    ("warmup_min_secs", "float", 0.5, "minimum number of seconds to rerun for, potentially making the actual number "
                                      "of warm-up runs to be greater than warmup_runs"),
    ("verbose", "bool", False, "Whether to log parameters whose values are not set. By default, only log those "
                               "parameters that are set by parsing their values from the commandline flags."),
    ("dry_run", "bool", False, "Whether to run the tool just with simply loading the model, allocating tensors etc. "
                               "but without actually invoking any op kernels."),
    ("report_peak_memory_footprint", "bool", False, "Report the peak memory footprint by periodically checking the "
                                                    "memory footprint. Internally, a separate thread will be spawned "
                                                    "for this periodic check. Therefore, the performance benchmark "
                                                    "result could be affected."),
    ("graph", "string", "", "graph file name"),
    ("enable_op_profiling", "bool", False, "enable op profiling"),
    ("help", "bool", False, "Print out all supported flags if true."),
    ("num_threads", "int32", -1, "number of threads used for inference on CPU."),
    ("use_xnnpack", "bool", False, "explicitly apply the XNNPACK delegate. Note the XNNPACK delegate could be "
                                   "implicitly applied by the TF Lite runtime regardless the value of this parameter. "
                                   "To disable this implicit application, set the value to false explicitly."),
]  # fmt: skip
# what LogParams prints for a parameter that was set (`DESCRIPTION: [value]`), in its order; Graph and Signature to
# run always
LOGGED = [("num_runs", "Min num runs"), ("min_secs", "Min runs duration (seconds)"),
          ("max_secs", "Max runs duration (seconds)"), ("run_delay", "Inter-run delay (seconds)"),
          ("num_threads", "Num threads"), ("warmup_runs", "Min warmup runs"),
          ("warmup_min_secs", "Min warmup runs duration (seconds)"), ("dry_run", "Run w/o invoking kernels"),
          ("report_peak_memory_footprint", "Report the peak memory footprint"), ("graph", "Graph"),
          ("signature_to_run_for", "Signature to run"), ("enable_op_profiling", "Enable op profiling"),
          ("help", "print out all supported flags"), ("num_threads", "#threads used for CPU inference"),
          ("use_xnnpack", "Use xnnpack")]  # fmt: skip
ALWAYS = {"graph", "signature_to_run_for"}


def info(message):
    print(f"INFO: {message}", flush=True)


def error(message):
    sys.stderr.write(f"ERROR: {message}\n")
    sys.stderr.flush()


def on_phone(path):
    """A path as the phone names it (the emulated phone runs under $PHONE_ROOT)."""
    return path.removeprefix(os.environ["PHONE_ROOT"])


def shown(value):
    """A value as C++'s ostream writes it: bool as 1/0, float like %g."""
    if isinstance(value, bool):
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def read(kind, text):
    """The value of a flag of `kind` as command_line_flags.cc reads it (istringstream), None when it cannot."""
    if kind == "bool":
        return text in ("true", "1") if text in ("true", "false", "0", "1") else None
    if kind == "string":
        return text
    number = r"[-+]?\d+" if kind == "int32" else r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    match = re.match(r"\s*" + number, text)
    if match:
        return int(match[0]) if kind == "int32" else float(match[0])
    return 0 if not text.strip() else None  # nothing but blanks: eof, the value-initialized 0


def usage(argv0):
    """Flags::Usage: `--name=default` padded to the longest, type, optional, help; one flag a line."""
    names = [f"--{name}=" + (str(default).lower() if kind == "bool" else shown(default)) for name, kind, default, _ in
             FLAGS]  # fmt: skip
    width = max(map(len, names))
    rows = "".join(f"\t{n:<{width}}\t{f[1]}\toptional\t{f[3]}\n" for n, f in zip(names, FLAGS, strict=True))
    return f"usage: {argv0} <flags>\nFlags:\n{rows}"


def parse_flags(argv):
    """(values, the names that were set, the unconsumed arguments), or None after the errors were printed."""
    values = {name: default for name, _, default, _ in FLAGS} | {"signature_to_run_for": ""}
    consumed, given, ok, where = [False] * len(argv), set(), True, {}
    for name, kind, _, _ in FLAGS:
        at = where.get(name)
        if at is None:
            at = next((i for i, arg in enumerate(argv) if not consumed[i] and arg.startswith(f"--{name}=")), -1)
        if at >= 0:
            value = read(kind, argv[at][len(name) + 3 :])
            if value is None:
                error(f"Failed to parse flag '{name}' against argv '{argv[at]}'")
                ok = False
            else:
                values[name] = value
                given.add(name)
            consumed[at] = True
        where[name] = at
    unconsumed = [arg for arg, used in zip(argv, consumed, strict=True) if not used]
    if not ok or values["help"] or unconsumed[:1] == ["--help"]:
        error(usage(on_phone(sys.argv[0])))
        return None
    return values, given, unconsumed


def log_params(values, given):
    info(f"Log parameter values verbosely: [{int(values['verbose'])}]")
    for name, description in LOGGED:
        if name in given or name in ALWAYS or values["verbose"]:
            info(f"{description}: [{on_phone(shown(values[name]))}]")


def stats(values):
    """tsl::StatWithPercentiles::OutputToStream of int64 µs values."""
    count = len(values)
    ordered = sorted(values)
    percentile = [0 if not values else (values[-1] if p == 100 else ordered[count * p // 100]) for p in (5, 50, 95)]
    tail = " p5={} median={} p95={}".format(*percentile)
    if not values:
        return "count=0" + tail
    if min(values) == max(values):
        return f"count={count} curr={values[-1]}" + ("(all same)" if count > 1 else "") + tail
    mean = sum(values) / count
    variance = int(sum(v * v for v in values) / count - mean * mean)
    return (f"count={count} first={values[0]} curr={values[-1]} min={min(values)} max={max(values)} "
            f"avg={mean:g} std={int(math.sqrt(variance))}" + tail)  # fmt: skip


def timed_runs(invoke, times, min_secs, max_secs, delay, crash=False):
    """BenchmarkModel::Run: at least `times` runs and `min_secs` seconds, none started after `max_secs`; µs each."""
    info(f"Running benchmark for at least {times} iterations and at least {min_secs:g} seconds but terminate if "
         f"exceeding {max_secs:g} seconds.")  # fmt: skip
    now = start = time.perf_counter()
    took = []
    while (len(took) < times or now < start + min_secs) and now <= start + max_secs:
        begin = time.perf_counter()
        invoke()
        took.append(int((time.perf_counter() - begin) * 1e6))
        if crash:
            crash_here("segv_in_main")
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter()
    info(stats(took) + "\n")
    return took


def memory_kb(key):
    with open("/proc/self/status") as handle:
        return next((int(line.split()[1]) for line in handle if line.startswith(key + ":")), 0)


def load(values, given):
    """The interpreter with its tensors allocated, XNNPACK applied as the flags say (the runtime's default delegate
    when --use_xnnpack is not given, as in the real tool); None after the errors were printed."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path, named = values["graph"], on_phone(values["graph"])
    if not os.access(path, os.R_OK):
        error(f"Could not open '{named}'.")
        error("The model allocation is null/empty")
        error(f"Failed to load model {named}")
        return None
    plain = "use_xnnpack" in given and not values["use_xnnpack"]
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if plain else OpResolverType.AUTO
    try:
        interpreter = Interpreter(model_path=path, num_threads=max(values["num_threads"], 1),
                                  experimental_op_resolver_type=resolver)  # fmt: skip
    except ValueError as exc:
        error(str(exc))
        error(f"Failed to load model {named}")
        return None
    info(f"Loaded model {named}")
    sys.stderr.write("INFO: Initialized TensorFlow Lite runtime.\n")
    sys.stderr.flush()
    interpreter.allocate_tensors()
    if values["use_xnnpack"]:
        applied(interpreter)
    return interpreter


def applied(interpreter):
    """What the XNNPACK delegate provider says after ModifyGraphWithDelegate: whole graph, N kernels, or none."""
    kernels = [op for op in interpreter._get_ops_details() if op["op_name"] == "DELEGATE"]
    inputs = {d["index"] for d in interpreter.get_input_details()}
    outputs = {d["index"] for d in interpreter.get_output_details()}
    if len(kernels) == 1 and inputs <= set(kernels[0]["inputs"]) and outputs <= set(kernels[0]["outputs"]):
        info("Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.")
    elif kernels:
        info(f"Explicitly applied XNNPACK delegate, and the model graph will be partially executed by the delegate "
             f"w/ {len(kernels)} delegate kernels.")  # fmt: skip
    else:
        info("Though XNNPACK delegate is explicitly applied, the model graph will not be executed by the delegate.")


def run_here(values, given):
    """BenchmarkModel::Run after its flags: parameters, model, warm-up and timed runs, their summary; exit 1 with
    `Benchmarking failed.` after an error."""
    import numpy as np

    log_params(values, given)
    size_mb = os.path.getsize(values["graph"]) / 1e6 if os.path.exists(values["graph"]) else -1
    before_kb, started = memory_kb("VmRSS"), time.perf_counter()
    interpreter = load(values, given)
    if interpreter is None:
        error("Benchmarking failed.")
        sys.exit(1)
    init_us = int((time.perf_counter() - started) * 1e6)
    init_kb = memory_kb("VmRSS") - before_kb
    info(f"The input model file size (MB): {size_mb:g}")
    info(f"Initialized session in {init_us / 1e3:g}ms.")
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape, dtype = detail["shape"], detail["dtype"]
        data = rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else \
            rng.integers(0, 127, shape).astype(dtype)  # fmt: skip
        interpreter.set_tensor(detail["index"], data)
    if values["dry_run"]:
        values |= {"warmup_runs": 0, "warmup_min_secs": -1.0, "num_runs": 0, "min_secs": -1.0}
    common = (values["max_secs"], values["run_delay"])
    warmup = timed_runs(interpreter.invoke, values["warmup_runs"], values["warmup_min_secs"], *common)
    timed = timed_runs(interpreter.invoke, values["num_runs"], values["min_secs"], *common, crash=True)
    mean = (lambda xs: sum(xs) / len(xs) if xs else 0)  # noqa: E731 — avg() of an empty Stat is int64's NaN, 0
    info(f"Inference timings in us: Init: {init_us}, First inference: {warmup[0] if warmup else 0}, Warmup (avg): "
         f"{mean(warmup):g}, Inference (avg): {mean(timed):g}")  # fmt: skip
    info("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the "
         "actual memory footprint of the model at runtime. Take the information at your discretion.")  # fmt: skip
    overall_kb = memory_kb("VmRSS") - before_kb
    info(f"Memory footprint delta from the start of the tool (MB): init={init_kb / 1024:g} overall="
         f"{overall_kb / 1024:g}")  # fmt: skip
    if values["report_peak_memory_footprint"]:
        info(f"Overall peak memory footprint (MB) via periodic monitoring: {memory_kb('VmHWM') / 1024:g}")


def main():
    info("STARTING!")
    parsed = parse_flags(sys.argv[1:])
    if parsed is None:
        error("Benchmarking failed.")
        sys.exit(1)
    values, given, unconsumed = parsed
    if unconsumed:
        print("WARN: Unconsumed cmdline flags: " + " ".join(unconsumed), flush=True)
    if not values["graph"]:
        error("Please specify the name of your TF Lite input file with --graph")
        error("Benchmarking failed.")
        sys.exit(1)
    start_run()
    run_work(__file__, run_here, [values, sorted(given)])
    end_run()
    sys.stdout.flush()
    os._exit(0)  # a C++ binary exits at once


if __name__ == "__main__":
    main()
