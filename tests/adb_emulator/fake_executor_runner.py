"""Test stand-in for ExecuTorch's executor_runner (examples/portable/executor_runner) built for Android with the
NDK: the real program's texts, streams and exit codes.

gflags reads the flags first: an unknown one prints `ERROR: unknown command line flag 'bogus'`, a number it cannot
read `ERROR: illegal value 'x' specified for int32 flag 'cpu_threads'` (all errors sorted by flag name, on stderr),
then exit 1. Everything else goes through ET_LOG, which on Android writes to logcat under tag ExecuTorch (here the
emulated phone's log, adb_emulator/logcat.py) and nothing to stdout/stderr: the thread pool size, the program
loaded by the real ExecuTorch runtime (`executorch.runtime`; the runtime's own messages, e.g. `Program identifier
'XX99' != expected 'ET12'`, are logged too: at level E when the call failed, else I), `Model loaded in x ms.`, one
`Iteration i of N: x ms` per execution of the real method on all-ones inputs of the program's input shape, and
`Model executed successfully N time(s) in T ms.` (their sum). A failed ET_CHECK logs `In function main(), assert
failed (cond): ...` at level F and aborts (exit 134; libc logs the signal under its own tag). `--print_output=all`
prints the outputs on stdout; `summary`'s pretty-printer is not reproduced (it prints nothing here), nor is a bare
last flag without its value.

OPTIONS: `backends` it was built with (a program delegated to another one fails to load: `Backend X is not
registered.`, status 0x20), `logging` (false: built without EXECUTORCH_ENABLE_LOGGING, it logs nothing),
`performant_cores` (the pool size `--cpu_threads=-1` picks), `event_tracer` (built with the event tracer,
-DEXECUTORCH_ENABLE_EVENT_TRACER: it has the flag `--etdump_path` (default `model.etdump`) and, after printing its
outputs, writes every execution's ETDump there: `ETDump written to file '<path>'.`; a path it cannot open logs
`Failed to open ETDump file at <path>.` and fails the check `Failed to save ETDump file.`; without it, gflags knows
no such flag). Runs, battery current and faults as in adb_emulator/stand_in.py (`segv_in_main`: after the first
execution); the program runs in a fork of the zygote.
"""

import json
import os
import re
import sys
import tempfile
import time

from adb_emulator import logcat
from adb_emulator.stand_in import crash_here, end_run, run_work, start_run

OPTIONS = json.loads("@OPTIONS@")
FLAGS = {"model_path": "model.pte", "inputs": "", "print_output": "summary", "num_executions": 1, "method_name": "",
         "cpu_threads": -1} | ({"etdump_path": "model.etdump"} if OPTIONS["event_tracer"] else {})  # fmt: skip
NUMBERS = {"num_executions": ("uint32", r"\+?\d+"), "cpu_threads": ("int32", r"[-+]?\d+")}
NATIVE = re.compile(r"^\[[\w.]+:\d+\] (.*)$")  # how the Python runtime prints ExecuTorch's log messages
STATUS = re.compile(r"0x:?([0-9a-fA-F]+)")
NOT_FOUND, ACCESS_FAILED = 0x20, 0x22


def parse_flags(argv):
    """gflags: (values, positional arguments), or None after writing its errors to stderr."""
    values, rest, errors, args = dict(FLAGS), [], {}, iter(argv)
    for arg in args:
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name not in FLAGS:
            errors[name] = f"ERROR: unknown command line flag '{name}'\n"
            continue
        value = value if has_value else next(args, "")
        kind, pattern = NUMBERS.get(name, ("string", ".*"))
        if not re.fullmatch(pattern, value, re.DOTALL):
            errors[name] = f"ERROR: illegal value '{value}' specified for {kind} flag '{name}'\n"
            continue
        values[name] = int(value) if name in NUMBERS else value
    if errors:
        sys.stderr.write("".join(errors[name] for name in sorted(errors)))
        return None
    return values, rest


class Log:
    """ET_LOG on Android for process `pid`: logcat entries under tag ExecuTorch (none when built without logging).
    Inside `with`, what ExecuTorch's Python runtime prints on fd 2 is captured and logged in order (other text goes
    on to the real stderr)."""

    def __init__(self, pid):
        self.pid, self.stderr, self.captured = pid, None, None

    def __call__(self, level, message):
        self.flush()
        if OPTIONS["logging"]:
            logcat.write(self.pid, level, "ExecuTorch", message)

    def __enter__(self):
        self.stderr, self.captured = os.dup(2), tempfile.TemporaryFile()
        os.dup2(self.captured.fileno(), 2)
        return self

    def __exit__(self, *exc):
        self.flush()
        os.dup2(self.stderr, 2)

    def flush(self, level="I"):
        """Log the runtime's captured messages at `level`."""
        if self.captured is None:
            return
        self.captured.seek(0)
        text = self.captured.read().decode(errors="replace")
        self.captured.seek(0)
        self.captured.truncate()
        for line in text.splitlines():
            native = NATIVE.match(line)
            if native and OPTIONS["logging"]:
                logcat.write(self.pid, level, "ExecuTorch", native[1])
            elif not native:
                os.write(self.stderr, (line + "\n").encode())

    def call(self, work):
        """(`work()`, ""), or (None, the runtime's error text) with its messages logged at level E."""
        self.flush()
        try:
            result = work()
        except RuntimeError as exc:
            self.flush("E")
            return None, str(exc)
        self.flush()
        return result, ""

    def check_failed(self, condition, message):
        """ET_CHECK_MSG: the failed check at level F, then abort (libc logs the signal)."""
        self("F", f"In function main(), assert failed ({condition}): {message}")
        logcat.write(self.pid, "F", "libc", f"Fatal signal 6 (SIGABRT), code -1 (SI_QUEUE) in tid {self.pid} "
                                            f"(executor_runner), pid {self.pid} (executor_runner)")  # fmt: skip
        sys.stdout.flush()
        os.abort()


def status_of(error):
    match = STATUS.search(error)
    return int(match[1], 16) if match else 1


def delegates(path, method_name):
    """The backend ids the method's program is delegated to (what Method::init looks up)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    with open(path, "rb") as handle:
        program = deserialize_pte_binary(handle.read()).program
    return [d.id for plan in program.execution_plan if plan.name == method_name for d in plan.delegates]


def load(log, path):
    """FileDataLoader::from, Program::load, then the method with the backends this build has: (program, name,
    method); the program traces its executions when the runner was built with the event tracer."""
    from executorch.runtime import Runtime

    shown = path.removeprefix(os.environ["PHONE_ROOT"])  # the path as the phone names it
    try:
        open(path, "rb").close()
    except OSError as exc:
        log("E", f"Failed to open {shown}: {exc.strerror} ({exc.errno})")
        log.check_failed("file_loader.ok()", f"FileDataLoader::from() failed: 0x{ACCESS_FAILED:x}")
    program, _ = log.call(lambda: Runtime.get().load_program(path, enable_etdump=OPTIONS["event_tracer"]))
    if program is None:
        log("E", f"Failed to parse model file {shown}")
        sys.exit(1)
    log("I", f"Model file {shown} is loaded.")
    name = sorted(program.method_names)[0]
    log("I", f"Using method {name}")
    for backend in delegates(path, name):
        if backend not in OPTIONS["backends"]:
            log("E", f"Backend {backend} is not registered.")
            log.check_failed("method.ok()", f"Loading of method {name} failed with status 0x{NOT_FOUND:x}")
    method, error = log.call(lambda: program.load_method(name))
    if method is None:
        log.check_failed("method.ok()", f"Loading of method {name} failed with status 0x{status_of(error):x}")
    return program, name, method


def execute(log, name, method, times):
    """`times` executions on all-ones inputs of the method's input shapes, each logged; the last outputs."""
    import torch

    meta = method.metadata
    dtypes = {0: torch.uint8, 1: torch.int8, 3: torch.int32, 4: torch.int64, 6: torch.float32, 11: torch.bool}
    specs = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
    inputs = [torch.ones(spec.sizes(), dtype=dtypes[int(spec.dtype())]) for spec in specs]
    def timed():
        begin = time.perf_counter()
        result = method.execute(inputs)
        return result, time.perf_counter() - begin

    outputs, total = [], 0.0
    for i in range(times):
        done, error = log.call(timed)
        if error:
            log.check_failed("status == Error::Ok", f"Execution of method {name} failed with status "
                                                    f"0x{status_of(error):x}")  # fmt: skip
        outputs, took = done
        total += took
        log("I", f"Iteration {i + 1} of {times}: {took * 1e3:f} ms")
        crash_here("segv_in_main")
    log("I", f"Model executed successfully {times} time(s) in {total * 1e3:f} ms.")
    log("I", f"{len(outputs)} outputs: ")
    return outputs


def run_here(flags, pid):
    """The runner's main() after its flags: thread pool, program, method, executions, outputs."""
    from executorch.extension.pybindings import portable_lib

    with Log(pid) as log:
        threads = OPTIONS["performant_cores"] if flags["cpu_threads"] == -1 else flags["cpu_threads"]
        log("I", f"Resetting threadpool with num threads = {threads}")
        if threads > 0:
            portable_lib._unsafe_reset_threadpool(threads)
        before = time.perf_counter()
        program, name, method = load(log, flags["model_path"])
        log("I", f"Model loaded in {(time.perf_counter() - before) * 1e3:f} ms.")
        outputs = execute(log, name, method, flags["num_executions"])
        if flags["print_output"] == "all":
            for i, output in enumerate(outputs):
                for j, value in enumerate(output.flatten().tolist()):
                    print(f"Output[{i}][{j}]: (float) {value:f}")
        if OPTIONS["event_tracer"]:
            write_etdump(log, program, flags["etdump_path"])


def write_etdump(log, program, path):
    """The event tracer's dump of every execution, written to `path`."""
    shown = path.removeprefix(os.environ["PHONE_ROOT"])  # the path as the phone names it
    try:
        open(path, "w+").close()
    except OSError:
        log("E", f"Failed to open ETDump file at {shown}.")
        log.check_failed("status == Error::Ok", "Failed to save ETDump file.")
    program.write_etdump_result_to_file(path, f"{path}.debug")  # no debug buffer: nothing is written there
    log("I", f"ETDump written to file '{shown}'.")


def main():
    parsed = parse_flags(sys.argv[1:])
    if parsed is None:
        sys.exit(1)
    flags, rest = parsed
    if rest:
        Log(os.getpid())("E", "Extra commandline args: " + " ".join(rest))
        sys.exit(1)
    start_run()
    run_work(__file__, run_here, [flags, os.getpid()])
    end_run()
    sys.stdout.flush()
    os._exit(0)  # a C++ binary exits at once


if __name__ == "__main__":
    main()
