"""The `host` device: time exported files in-process, interleaved in one session, with the runtime of their format
(.ptl: the lite interpreter; .pte: ExecuTorch's runtime)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from adb_bench.cpu import other_cpu, read_clock, this_cpu

BLOCK = 20  # timed runs of one file before the session switches to the next: conditions are shared, caches warm


def load_lite(path: str) -> Callable[[torch.Tensor], object]:
    from torch.jit.mobile import _load_for_lite_interpreter

    return _load_for_lite_interpreter(path)


def load_executorch(path: str) -> Callable[[torch.Tensor], object]:
    """The ExecuTorch runtime's forward method, its thread pool (XNNPACK's) sized like torch's (the device's)."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    if portable_lib._threadpool_get_thread_count() != torch.get_num_threads():
        portable_lib._unsafe_reset_threadpool(torch.get_num_threads())
    program = Runtime.get().load_program(path)
    method = program.load_method("forward")
    return lambda x, program=program: method.execute([x])  # the method needs its program alive


LOADERS: dict[str, Callable[[str], Callable[[torch.Tensor], object]]] = {".ptl": load_lite, ".pte": load_executorch}


class HostDevice:
    """Loads every file, runs `warmup` untimed forwards of each, then timed blocks of `BLOCK` runs of each file in
    turn until every file has `iters` runs and the session has lasted `min_time_s` per file (a long window keeps
    the median clear of short bursts of machine noise). The pipeline holds the idle-host lock meanwhile."""

    exclusive_host = True

    def __init__(
        self, threads: int = 1, warmup: int = 100, iters: int = 300, min_time_s: float = 1.0, qengine: str = "x86"
    ):
        self.threads, self.warmup, self.iters, self.qengine = threads, warmup, iters, qengine
        self.min_time_s = min_time_s

    def identity(self) -> dict:
        return {
            "device": f"host:{platform.machine()}", **this_cpu(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": self.threads, "warmup": self.warmup,
            "iters": self.iters, "min_time_s": self.min_time_s, "qengine": self.qengine, "block": BLOCK,
        }  # fmt: skip

    def _session(self, forwards: list[Callable[[], object]]) -> list[list[float]]:
        for forward in forwards:
            for _ in range(self.warmup):
                forward()
        samples: list[list[float]] = [[] for _ in forwards]
        deadline = time.perf_counter() + self.min_time_s * len(forwards)
        while min(map(len, samples)) < self.iters or time.perf_counter() < deadline:
            for forward, timed in zip(forwards, samples, strict=True):
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    forward()
                    timed.append((time.perf_counter() - start) * 1e3)
        return samples

    def benchmark(self, model_paths: Sequence[str], input_shape: Sequence[int]) -> list[dict]:
        """Per-iteration latencies (ms) of every file, timed interleaved in one session, in the given order."""
        previous = torch.get_num_threads(), torch.backends.quantized.engine
        torch.set_num_threads(self.threads)
        torch.backends.quantized.engine = self.qengine  # time quantized models under their engine
        start = read_clock()
        try:
            x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
            modules = [LOADERS[Path(p).suffix](p) for p in model_paths]
            with torch.no_grad():
                sessions = self._session([lambda m=m: m(x) for m in modules])
        finally:
            torch.set_num_threads(previous[0])
            torch.backends.quantized.engine = previous[1]
        busy = other_cpu(start, read_clock())  # cores other processes kept busy meanwhile
        common = {"device": f"host:{platform.machine()}", "threads": self.threads, **this_cpu(), "host_other_cpu": busy}
        return [
            {"samples_ms": s, **common, "qengine": self.qengine if ptl else None}
            for s, ptl in zip(sessions, (Path(p).suffix == ".ptl" for p in model_paths), strict=True)
        ]
