"""Test stand-in for speed_benchmark_torch: same flags and parsing rules, real lite-interpreter runs.

`--k=v` flags only; an unknown flag, a bool flag without a value or a malformed value prints
"Failed to parse command line flags!" and exits 1. The pushed `.ptl` is loaded with the lite interpreter
(a model newer than MAX_BYTECODE is rejected with PyTorch's message) and timed for real. Every run appends
`start <pid>` / `end <pid>` to $PHONE_ROOT/runs.log; the file $PHONE_ROOT/hang makes it sleep, the file
$PHONE_ROOT/slow holds seconds to sleep per run (to make overlapping runs visible).
"""

import os
import sys
import time

MAX_BYTECODE = int("@MAX_BYTECODE@")
FLAGS = {"model": "", "input_dims": "", "input_type": "float", "input_memory_format": "contiguous_format",
         "no_inputs": False, "use_bundled_input": -1, "warmup": 0, "iter": 10, "report_pep": False,
         "use_caching_allocator": False, "print_output": False, "vulkan": False}  # fmt: skip


def parse_flags(argv):
    values = dict(FLAGS)
    for arg in argv:
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or name not in FLAGS or not eq:
            raise ValueError(arg)
        if isinstance(FLAGS[name], bool):
            if value not in ("true", "false", "1", "0"):
                raise ValueError(arg)
            values[name] = value in ("true", "1")
        else:
            values[name] = type(FLAGS[name])(value)
    return values


def log(event):
    with open(os.path.join(os.environ["PHONE_ROOT"], "runs.log"), "a") as handle:
        handle.write(f"{event} {os.getpid()}\n")


def run(flags):
    print("Starting benchmark.", flush=True)  # before the (slow) torch import: a drop mid-run costs nothing
    import torch
    from torch.jit.mobile import _get_model_bytecode_version, _load_for_lite_interpreter

    version = _get_model_bytecode_version(flags["model"])
    if version > MAX_BYTECODE:
        print("terminate called after throwing an instance of 'c10::Error'", file=sys.stderr)
        print(f"  what():  Lite Interpreter version number does not match. The model version must be between 3 and "
              f"{MAX_BYTECODE} but the model version is {version} ()", file=sys.stderr)  # fmt: skip
        sys.exit(134)
    module = _load_for_lite_interpreter(flags["model"])
    dtype = {"float": torch.float, "uint8_t": torch.uint8, "int64": torch.int64}[flags["input_type"]]
    x = torch.ones([int(d) for d in flags["input_dims"].split(",")], dtype=dtype)
    print("Running warmup runs.")
    for _ in range(flags["warmup"]):
        module(x)
    print("Main runs.")
    total = 0.0
    for _ in range(flags["iter"]):
        start = time.perf_counter()
        module(x)
        elapsed = (time.perf_counter() - start) * 1e6
        total += elapsed
        if flags["report_pep"]:
            print(f'PyTorchObserver {{"type": "NET", "unit": "us", "metric": "latency", "value": "{elapsed:g}"}}')
    per_iter = total / max(flags["iter"], 1)
    print(f"Main run finished. Microseconds per iter: {per_iter:f}. Iters per second: {1e6 / per_iter:f}")


def main():
    try:
        flags = parse_flags(sys.argv[1:])
    except ValueError:
        print("Failed to parse command line flags!", file=sys.stderr)
        sys.exit(1)
    log("start")
    root = os.environ["PHONE_ROOT"]
    if os.path.exists(os.path.join(root, "hang")):
        time.sleep(120)
    if os.path.exists(os.path.join(root, "slow")):
        with open(os.path.join(root, "slow")) as handle:
            time.sleep(float(handle.read()))
    run(flags)
    log("end")


main()
