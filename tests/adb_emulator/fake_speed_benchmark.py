"""Test stand-in for speed_benchmark_torch (lite-interpreter build): the real program's texts, streams and exit codes.

Like binaries/speed_benchmark_torch.cc: c10's flag parser (messages to stderr, only on failure, upstream's
missing newline after a bare last flag; ints parsed like atoi), then the inputs (stoi, input type, memory
format), then the model is loaded and run with the real lite interpreter; an uncaught C++ exception is printed
in the binary's C++ runtime dialect (OPTIONS["dialect"]: "android" = libc++abi, "host" = libstdc++ with
frames) and aborts (exit 134); timings are integer µs printed like C++ floats. A binary built with the NDK's
shared STL (OPTIONS["needs"]) is refused by the linker unless LD_LIBRARY_PATH has the library (exit 1).

Runs, battery current and faults as in adb_emulator/stand_in.py (`segv_in_main`: during the main runs,
`segv_at_exit`: after a valid summary); with $PHONE_ZYGOTE set, the model is loaded and timed in a fork of that
zygote (torch already imported there).
"""

import json
import os
import re
import sys
import time

from adb_emulator.stand_in import crash_here, end_run, run_work, start_run

OPTIONS = json.loads("@OPTIONS@")
FLAGS = {"model": "", "input_dims": "", "input_type": "", "input_memory_format": "contiguous_format",
         "no_inputs": False, "use_caching_allocator": False, "use_bundled_input": -1, "print_output": False,
         "warmup": 0, "iter": 10, "report_pep": False, "pytext_len": 0, "vulkan": False}  # fmt: skip
BOOL_NOTE = ("Note that if you are passing in a bool flag, you need to explicitly specify it, like --arg=True or "
             "--arg True. Otherwise, the next argument may be inadvertently used as the argument, causing the above "
             "error.")  # fmt: skip


class CppError(Exception):
    """An exception the C++ program would throw: (type, message, where it was raised)."""

    def __init__(self, kind, message, where="create_inputs at binaries/speed_benchmark_torch.cc:108"):
        super().__init__(message)
        self.kind, self.message, self.where = kind, message, where


def flag_value(default, text, log):
    if isinstance(default, bool):
        if text in ("false", "False", "FALSE", "0", "true", "True", "TRUE", "1"):
            return text in ("true", "True", "TRUE", "1")
        log.append(f"C10 flag error: Cannot convert argument to bool: {text}\n{BOOL_NOTE}\n")
        return None
    if isinstance(default, int):
        match = re.match(r"\s*[-+]?\d+", text)  # atoi: leading number, else 0; never fails
        return int(match[0]) if match else 0
    return text


def parse_flags(argv):
    """c10::ParseCommandLineFlags: the values, or None after writing its messages to stderr."""
    values, log, i = dict(FLAGS), ["Parsing commandline arguments for c10.\n"], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            log.append(f"C10 flag: commandline argument does not match --name=var or --name format: {arg}. "
                       "Ignoring this argument.\n")  # fmt: skip
            i += 1
            continue
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        else:
            key, i = arg[2:], i + 1
            if i == len(argv):
                log.append(f"C10 flag: reached the last commandline argument, but I am expecting a value for {arg}")
                break
            value = argv[i]
        if key not in FLAGS:
            log.append(f"C10 flag: unrecognized commandline argument: {arg}\n")
            break
        parsed = flag_value(FLAGS[key], value, log)
        if parsed is None:
            log.append(f"C10 flag: illegal argument: {arg}\n")
            break
        values[key], i = parsed, i + 1
    else:
        return values
    sys.stderr.write("".join(log))
    return None


def stoi(text):
    if not re.match(r"\s*[-+]?\d", text):
        raise CppError("std::invalid_argument", "stoi" if OPTIONS["dialect"] == "host" else "stoi: no conversion")
    return int(re.match(r"\s*[-+]?\d+", text)[0])


def create_inputs(flags):
    """The inputs' (dims, type, memory format), checked like the binary does before it loads the model."""
    if flags["no_inputs"] or flags["use_bundled_input"] >= 0:
        return []
    dims_list, types, formats = ([x for x in flags[name].split(";") if x]
                                 for name in ("input_dims", "input_type", "input_memory_format"))  # fmt: skip
    if len(dims_list) != len(types):
        raise CppError("c10::Error", "Input dims and type should have the same number of items.")
    if len(dims_list) != len(formats):
        raise CppError("c10::Error", "Input dims and format should have the same number of items.")
    inputs = []
    for dims_text, kind, memory in zip(dims_list, types, formats, strict=True):
        dims = [stoi(s) for s in dims_text.split(",") if s]
        if kind not in ("float", "uint8_t", "int64"):
            raise CppError("c10::Error", f"Unsupported input type: {kind}")
        if memory not in ("contiguous_format", "channels_last"):
            raise CppError("c10::Error", f"Unsupported input memory format: {memory}")
        if memory == "channels_last" and len(dims) != 4:
            raise CppError("c10::Error", "channels_last memory format only available on 4D tensors!")
        inputs.append((dims, kind, memory))
    return inputs


def tensors(specs, torch):
    dtypes = {"float": torch.float, "uint8_t": torch.uint8, "int64": torch.int64}
    formats = {"channels_last": torch.channels_last, "contiguous_format": torch.contiguous_format}
    return [torch.ones(d, dtype=dtypes[k]).contiguous(memory_format=formats[m]) for d, k, m in specs]


def load(path):
    from torch.jit.mobile import _get_model_bytecode_version, _load_for_lite_interpreter

    where = "RAIIFile at caffe2/serialize/file_adapter.cc:30"
    if not os.path.exists(path):
        raise CppError("c10::Error", f"open file failed because of errno 2 on fopen: No such file or directory, "
                                     f"file path: {path}", where)  # fmt: skip
    try:
        version = _get_model_bytecode_version(path)
        module = _load_for_lite_interpreter(path)
    except RuntimeError as exc:
        raise CppError("c10::Error", str(exc), "valid at caffe2/serialize/inline_container.cc:236") from None
    if version > OPTIONS["max_bytecode"]:
        raise CppError("c10::Error", f"Lite Interpreter version number does not match. The model version must be "
                                     f"between 3 and {OPTIONS['max_bytecode']} but the model version is {version} ()",
                       "parseMethods at torch/csrc/jit/mobile/import.cpp:320")  # fmt: skip
    return module


def terminate(error):
    """What the C++ runtime prints for an uncaught exception, then abort() (SIGABRT: the shell says Aborted)."""
    if OPTIONS["dialect"] == "host":
        text = f"terminate called after throwing an instance of '{error.kind}'\n  what():  {error.message}\n"
        if error.kind == "c10::Error":
            text += (
                f"Exception raised from {error.where} (most recent call first):\n"
                "frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x96 (0x7f3a2c1a9446 in "
                "libc10.so)\nframe #1: <unknown function> + 0x1c2b3 (0x55d0c0a1c2b3 in speed_benchmark_torch)\n"
            )
    else:
        text = f"libc++abi: terminating due to uncaught exception of type {error.kind}: {error.message}\n"
        if error.kind == "c10::Error":
            text += f"Exception raised from {error.where} (most recent call first):\n(no backtrace available)\n"
    sys.stdout.flush()
    sys.stderr.write(text)
    sys.stderr.flush()
    os.abort()


def benchmark(flags, specs):
    import torch

    inputs = tensors(specs, torch)
    module = load(flags["model"])
    print("Starting benchmark.")
    print("Running warmup runs.")
    for _ in range(flags["warmup"]):
        run(module, inputs)
    print("Main runs.")
    times, start = [], time.perf_counter()
    for _ in range(flags["iter"]):
        begin = time.perf_counter()
        run(module, inputs)
        times.append(float(int((time.perf_counter() - begin) * 1e6)))  # duration_cast<microseconds> truncates
        crash_here("segv_in_main")
    micros = (time.perf_counter() - start) * 1e6
    if flags["report_pep"]:
        for t in times:
            print(f'PyTorchObserver {{"type": "NET", "unit": "us", "metric": "latency", "value": "{t:g}"}}')
    per_iter = micros / flags["iter"] if flags["iter"] else float("inf")
    print(f"Main run finished. Microseconds per iter: {per_iter:g}. Iters per second: {1e6 * flags['iter'] / micros:g}")


def run(module, inputs):
    try:
        module(*inputs)
    except RuntimeError as exc:
        raise CppError("c10::Error", str(exc), "forward at torch/csrc/jit/mobile/function.cpp:195") from None


def run_here(flags, specs):
    """Load the model and time it like the binary does (in this process, or in a fork of the zygote)."""
    try:
        benchmark(flags, specs)
    except CppError as error:
        terminate(error)
    crash_here("segv_at_exit")


def main():
    sys.stdout.reconfigure(line_buffering=True)  # std::endl flushes every line
    folders = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for lib in OPTIONS["needs"]:
        if not any(os.path.exists(os.path.join(d, lib)) for d in folders):
            sys.stderr.write(f'CANNOT LINK EXECUTABLE "{sys.argv[0]}": library "{lib}" not found: needed by main '
                             "executable\n")  # fmt: skip
            sys.exit(1)
    flags = parse_flags(sys.argv[1:])
    if flags is None:
        print("Failed to parse command line flags!", file=sys.stderr)
        sys.exit(1)
    try:
        specs = create_inputs(flags)
    except CppError as error:
        terminate(error)
    start_run()
    run_work(__file__, run_here, [flags, specs])
    end_run()
    sys.stdout.flush()
    os._exit(0)  # a C++ binary exits at once; Python's torch teardown would keep the "load" current up


if __name__ == "__main__":
    main()
