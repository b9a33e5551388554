"""The `host` device: time exported files on this machine with the runtime of their format (.ptl: the lite
interpreter; .pte: ExecuTorch's runtime; .tflite: LiteRT's interpreter), like a phone session: rounds, each a fresh
process timing the files interleaved, with a no-op program of each runtime timed beside them (the binding's cost per
call); then each file's peak memory, in a process of its own, net of the no-op program's."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from adb_bench.cpu import other_cpu, read_clock, this_cpu
from adb_bench.errors import DeviceError
from adb_bench.memory import own_high_water_kb, restart_high_water
from adb_bench.session import iteration_shares, run_order

log = logging.getLogger(__name__)
NO_PROFILER = {  # why a format has no per-operator profile here
    ".ptl": "the lite interpreter has no operator profiler",
    ".tflite": "LiteRT's op profiler (benchmark_model --enable_op_profiling) is not read",
}
BLOCK = 20  # timed runs of one file before the session switches to the next: conditions are shared, caches warm
MEMORY_RUNS = 3  # forwards before the high-water mark is read: activations allocated, pools started, caches filled


def load_lite(path: str) -> Callable[[torch.Tensor], object]:
    from torch.jit.mobile import _load_for_lite_interpreter

    return _load_for_lite_interpreter(path)


def load_executorch(path: str) -> Callable[[torch.Tensor], object]:
    """The ExecuTorch runtime's forward method, its thread pool (XNNPACK's) sized like torch's (the device's)."""
    from executorch.runtime import Runtime

    size_executorch_pool()
    program = Runtime.get().load_program(path)
    method = program.load_method("forward")
    return lambda x, program=program: method.execute([x])  # the method needs its program alive


def size_executorch_pool() -> None:
    """ExecuTorch's thread pool (XNNPACK's) sized like torch's (the device's threads)."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != torch.get_num_threads():
        portable_lib._unsafe_reset_threadpool(torch.get_num_threads())


def load_litert(path: str) -> Callable[[torch.Tensor], object]:
    """LiteRT's interpreter (XNNPACK, its default delegate) on torch's thread count (the device's). An input is
    converted to the file's type once (an int8 file's scale and zero point), as benchmark_model feeds it its own."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=torch.get_num_threads())
    interpreter.allocate_tensors()
    (into,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    last: list = [None, None]  # the last input tensor and its array in the file's type

    def forward(x: torch.Tensor) -> object:
        if last[0] is not x:
            last[:] = x, litert_input(x, into)
        interpreter.set_tensor(into["index"], last[1])
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return forward


def litert_input(x: torch.Tensor, detail: dict) -> object:
    """`x` as the array a LiteRT input of `detail` takes: quantized with its scale and zero point when integer."""
    import numpy as np

    if detail["dtype"] == np.float32:
        return x.numpy()
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x.numpy() / scale) + zero, info.min, info.max).astype(detail["dtype"])


LOADERS: dict[str, Callable[[str], Callable[[torch.Tensor], object]]] = {
    ".ptl": load_lite, ".pte": load_executorch, ".tflite": load_litert,
}  # fmt: skip


class NoOp(nn.Module):
    """The same call as a model's (one input of its shape in, a tensor out) and no work: the first element."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten()[:1] * 1


def write_noop(suffix: str, input_shape: Sequence[int], path: Path) -> None:
    """The no-op program of a format's runtime: scripted for the lite interpreter, exported on portable kernels for
    ExecuTorch, converted by litert-torch for LiteRT."""
    example = torch.zeros(*input_shape)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    if suffix == ".ptl":
        with warnings.catch_warnings():  # the lite interpreter's deprecation: said once, by the export of .ptl files
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.script(NoOp())._save_for_lite_interpreter(str(tmp))
    elif suffix == ".tflite":
        import litert_torch

        litert_torch.config.show_progress = False
        litert_torch.convert(NoOp().eval(), (example,)).export(str(tmp))
    else:
        from executorch.exir import to_edge

        tmp.write_bytes(to_edge(torch.export.export(NoOp(), (example,))).to_executorch().buffer)
    os.replace(tmp, path)


def noop_file(suffix: str, input_shape: Sequence[int]) -> Path:
    """This machine's no-op program for a suffix and input shape (built once, in the temp dir, per torch/ExecuTorch
    version)."""
    from importlib.metadata import version

    runtimes = {".pte": ("executorch",), ".tflite": ("litert-torch", "ai-edge-litert")}  # the lite interpreter: torch
    runtime = " ".join(version(package) for package in runtimes.get(suffix, ()))
    key = hashlib.sha256(f"{suffix} {runtime} {torch.__version__} {list(input_shape)}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "pocketbench-noop" / f"{key}{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        in_child(write_noop, suffix, input_shape, path)
    return path


def in_child(function: Callable, *args) -> object:
    """`function(*args)` in a forked child of this process, which is left as it was (no model loaded, no thread
    pool started): its return value, or a DeviceError with the child's last error line."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def body() -> None:
        try:
            send.send(("ok", function(*args)))
        except BaseException as exc:  # noqa: BLE001 — reported to the parent, which raises
            send.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))

    child = context.Process(target=body, daemon=True)
    child.start()
    send.close()
    try:
        status, value, *trace = receive.recv()
    except EOFError:
        status, value, trace = "error", "the timing process died", []
    child.join()
    if status != "ok":
        log.debug("".join(trace))  # the job log keeps the child's traceback
        raise DeviceError(f"host benchmark: {value.splitlines()[0] if value else 'failed'}")
    return value


def time_round(paths: Sequence[str], input_shape: Sequence[int], threads: int, qengine: str, warmup: int,
               iters: int, min_time_s: float) -> tuple[list[list[float]], dict[str, int]]:  # fmt: skip
    """One round (in its own process): load every file, `warmup` untimed forwards of each, then timed blocks of
    BLOCK runs of each file in turn until every file has `iters` runs and `min_time_s` have passed. Returns the
    samples and the threads each runtime ran on (torch's for .ptl, ExecuTorch's pool for .pte, the interpreter's
    num_threads for .tflite)."""
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = qengine  # time quantized models under their engine
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    modules = [LOADERS[Path(p).suffix](p) for p in paths]
    forwards = [lambda m=m: m(x) for m in modules]
    samples: list[list[float]] = [[] for _ in forwards]
    with torch.no_grad():
        for forward in forwards:
            for _ in range(warmup):
                forward()
        deadline = time.perf_counter() + min_time_s
        while min(map(len, samples)) < iters or time.perf_counter() < deadline:
            for forward, timed in zip(forwards, samples, strict=True):
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    forward()
                    timed.append((time.perf_counter() - start) * 1e3)
    return samples, {suffix: ran_on(suffix) for suffix in {Path(p).suffix for p in paths}}


def high_water(path: str, input_shape: Sequence[int], threads: int, qengine: str, runs: int) -> int | None:
    """In its own process: the high-water mark (kB) after loading `path` and running it `runs` times (its
    activations allocated, its runtime's pools started), counted from the process's resident set before loading
    where the kernel lets the mark be restarted (else from the fork)."""
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = qengine
    restart_high_water()
    forward = LOADERS[Path(path).suffix](path)
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _ in range(runs):
            forward(x)
    return own_high_water_kb()


def no_profile(path: str) -> str:
    """The one line for a file that is not profiled (only .pte files are: ExecuTorch's event tracer)."""
    why = NO_PROFILER.get(Path(path).suffix, "no profiler")
    return f"no per-operator profile of {Path(path).suffix} files: {why} (README: Per-layer profile)"


def traced_round(paths: Sequence[str], dumps: Sequence[str], input_shape: Sequence[int], threads: int, runs: int
                 ) -> None:  # fmt: skip
    """In its own process: every .pte loaded by ExecuTorch's runtime with its event tracer on (ETDump), `runs`
    forwards of each in blocks of BLOCK, the files in turn; each file's dump written to its path in `dumps`."""
    from executorch.runtime import Runtime

    torch.set_num_threads(threads)
    size_executorch_pool()
    programs = [Runtime.get().load_program(p, enable_etdump=True) for p in paths]
    methods = [program.load_method("forward") for program in programs]
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    for done in range(0, runs, BLOCK):
        for method in methods:
            for _ in range(min(BLOCK, runs - done)):
                method.execute([x])
    for program, dump in zip(programs, dumps, strict=True):
        program.write_etdump_result_to_file(dump, f"{dump}.debug")  # no debug buffer: nothing is written there


def net_mb(peak_kb: int | None, idle_kb: int | None) -> float | None:
    """A file's peak memory net of its runtime's (MB), None where either could not be read."""
    return None if peak_kb is None or idle_kb is None else max(peak_kb - idle_kb, 0) / 1024


def ran_on(suffix: str) -> int:
    """The threads a runtime uses now in this process."""
    if suffix == ".pte":
        from executorch.extension.pybindings import portable_lib

        return portable_lib._threadpool_get_thread_count()
    return torch.get_num_threads()


class HostDevice:
    """`rounds` rounds, each a process forked from this one (which loads no model): every file and the no-op
    program of each runtime among them loaded, `warmup` untimed forwards of each, then timed blocks of BLOCK runs
    of each file in turn until each has its share of `iters` and the round its share of `min_time_s` per model
    file (a long window keeps the median clear of short bursts of noise). Files run in the given order in even
    rounds and in reverse in odd ones. The pipeline holds the idle-host lock meanwhile.

    Peak memory (`mem_peak_mb`, unless `memory=False`): each file and each no-op program loaded alone in a process
    forked from this one and run MEMORY_RUNS times; the file's high-water mark minus its runtime's no-op program's,
    so what the runtime and this process hold anyway is not counted."""

    exclusive_host = True

    def __init__(self, threads: int = 1, warmup: int = 100, iters: int = 300, rounds: int = 5,
                 min_time_s: float = 1.0, qengine: str = "x86", memory: bool = True, profile: bool = False
                 ):  # fmt: skip
        if not 1 <= rounds <= max(iters, 1):
            raise DeviceError(f"device.rounds={rounds} must be between 1 and device.iters={iters}")
        self.threads, self.warmup, self.iters, self.rounds, self.qengine = threads, warmup, iters, rounds, qengine
        self.min_time_s, self.memory, self.profiling = min_time_s, memory, profile

    def attach(self) -> None:
        """The host is always there."""

    def identity(self) -> dict:
        return {
            "device": f"host:{platform.machine()}", **this_cpu(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": self.threads, "warmup": self.warmup, "iters": self.iters,
            "rounds": self.rounds, "min_time_s": self.min_time_s, "qengine": self.qengine, "block": BLOCK, "noop": 1,
            "memory_runs": MEMORY_RUNS if self.memory else 0,
        }  # fmt: skip

    def benchmark(self, model_paths: Sequence[str], input_shape: Sequence[int]) -> list[dict]:
        """Per-iteration latencies (ms) of every file in timing order, the sizes of its rounds, and the median
        latency of its runtime's no-op program in the same session (`call_overhead_ms`), in the given order."""
        suffixes = list(dict.fromkeys(Path(p).suffix for p in model_paths))
        noops = [str(noop_file(s, input_shape)) for s in suffixes]
        files = [*map(str, model_paths), *noops]
        samples: list[list[float]] = [[] for _ in files]
        sizes: list[list[int]] = [[] for _ in files]
        window = self.min_time_s * len(model_paths) / self.rounds
        shares, schedule = iteration_shares(self.iters, self.rounds), run_order(len(files), self.rounds)
        start = read_clock()
        for r in range(self.rounds):
            order = [i for round_, i in schedule if round_ == r]
            timed, threads = in_child(time_round, [files[i] for i in order], input_shape, self.threads,
                                      self.qengine, self.warmup, shares[r], window)  # fmt: skip
            for i, values in zip(order, timed, strict=True):
                samples[i] += values
                sizes[i].append(len(values))
        busy = other_cpu(start, read_clock())  # cores other processes kept busy meanwhile (rounds are our own)
        peaks = [self._peak_kb(f, input_shape) for f in files]
        overhead = {s: statistics.median(samples[len(model_paths) + k]) for k, s in enumerate(suffixes)}
        idle_kb = {s: peaks[len(model_paths) + k] for k, s in enumerate(suffixes)}
        memory = [net_mb(peaks[i], idle_kb[Path(p).suffix]) for i, p in enumerate(model_paths)]
        unread = ["mem_peak_mb: the high-water mark could not be read (see the job log)"] if self.memory else []
        common = {"device": f"host:{platform.machine()}", **this_cpu(), "host_other_cpu": busy, "rounds": self.rounds}
        return [
            {"samples_ms": samples[i], "round_sizes": sizes[i], "call_overhead_ms": overhead[Path(p).suffix], **common,
             "threads": threads[Path(p).suffix], "qengine": self.qengine if Path(p).suffix == ".ptl" else None,
             "mem_peak_mb": memory[i], "notes": unread if memory[i] is None else []}
            for i, p in enumerate(model_paths)
        ]  # fmt: skip

    def profile(self, model_paths: Sequence[str], input_shape: Sequence[int], folder: Path) -> list[dict]:
        """Each .pte's ETDump of `warmup` + `iters` traced runs in one process forked from this one (the files in
        turn), written to `folder`: {"etdump": path, "skip": warmup} per file, {"error": ...} for a file there is
        none of."""
        pte = [p for p in model_paths if Path(p).suffix == ".pte"]
        dumps = {p: str(Path(folder) / f"{i}.etdp") for i, p in enumerate(pte)}
        if pte:
            in_child(traced_round, pte, list(dumps.values()), input_shape, self.threads, self.warmup + self.iters)
        return [{"etdump": dumps[p], "skip": self.warmup} if p in dumps else {"error": no_profile(p)}
                for p in model_paths]  # fmt: skip

    def _peak_kb(self, path: str, input_shape: Sequence[int]) -> int | None:
        """The high-water mark of a process that loaded and ran `path` alone; None when memory is off or the process
        failed (the timings stand: the row keeps them)."""
        if not self.memory:
            return None
        try:
            return in_child(high_water, path, input_shape, self.threads, self.qengine, MEMORY_RUNS)
        except DeviceError as exc:
            log.warning("peak memory of %s not measured: %s", Path(path).name, exc)
            return None
