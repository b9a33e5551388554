"""The `host` device: time an exported .ptl in-process with the lite interpreter."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence

import torch

from adb_bench.stats import summarize_ms


class HostDevice:
    """Loads the file with the lite interpreter, runs `warmup` untimed then `iters` timed forwards."""

    def __init__(self, threads: int = 1, warmup: int = 100, iters: int = 300, qengine: str = "x86"):
        self.threads, self.warmup, self.iters, self.qengine = threads, warmup, iters, qengine

    def identity(self) -> dict:
        return {
            "device": f"host:{platform.machine()}", "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": self.threads, "warmup": self.warmup,
            "iters": self.iters, "qengine": self.qengine,
        }  # fmt: skip

    def benchmark(self, model_path: str, input_shape: Sequence[int]) -> dict:
        from torch.jit.mobile import _load_for_lite_interpreter

        previous = torch.get_num_threads(), torch.backends.quantized.engine
        torch.set_num_threads(self.threads)
        torch.backends.quantized.engine = self.qengine  # time quantized models under their engine
        try:
            module = _load_for_lite_interpreter(model_path)
            x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
            samples = []
            with torch.no_grad():
                for i in range(self.warmup + self.iters):
                    start = time.perf_counter()
                    module(x)
                    if i >= self.warmup:
                        samples.append((time.perf_counter() - start) * 1e3)
        finally:
            torch.set_num_threads(previous[0])
            torch.backends.quantized.engine = previous[1]
        ident = self.identity()
        return summarize_ms(samples) | {"device": ident["device"], "threads": self.threads, "qengine": self.qengine}
