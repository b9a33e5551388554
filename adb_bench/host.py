"""The `host` device: time an exported .ptl in-process with the lite interpreter."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence

import torch

from adb_bench.stats import summarize_ms


class HostDevice:
    """Loads the file with the lite interpreter, runs `warmup` untimed forwards, then timed ones until
    both `iters` runs and `min_time_s` seconds are done (a long window keeps the median clear of
    short bursts of machine noise)."""

    def __init__(
        self, threads: int = 1, warmup: int = 100, iters: int = 300, min_time_s: float = 1.0, qengine: str = "x86"
    ):
        self.threads, self.warmup, self.iters, self.qengine = threads, warmup, iters, qengine
        self.min_time_s = min_time_s

    def identity(self) -> dict:
        return {
            "device": f"host:{platform.machine()}", "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": self.threads, "warmup": self.warmup,
            "iters": self.iters, "min_time_s": self.min_time_s, "qengine": self.qengine,
        }  # fmt: skip

    def _time(self, forward: Callable[[], object]) -> list[float]:
        for _ in range(self.warmup):
            forward()
        samples: list[float] = []
        deadline = time.perf_counter() + self.min_time_s
        while len(samples) < self.iters or time.perf_counter() < deadline:
            start = time.perf_counter()
            forward()
            samples.append((time.perf_counter() - start) * 1e3)
        return samples

    def benchmark(self, model_path: str, input_shape: Sequence[int]) -> dict:
        from torch.jit.mobile import _load_for_lite_interpreter

        previous = torch.get_num_threads(), torch.backends.quantized.engine
        torch.set_num_threads(self.threads)
        torch.backends.quantized.engine = self.qengine  # time quantized models under their engine
        try:
            module = _load_for_lite_interpreter(model_path)
            x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                samples = self._time(lambda: module(x))
        finally:
            torch.set_num_threads(previous[0])
            torch.backends.quantized.engine = previous[1]
        device = f"host:{platform.machine()}"
        return summarize_ms(samples) | {"device": device, "threads": self.threads, "qengine": self.qengine}
