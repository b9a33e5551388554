"""Technique steps that misbehave on purpose, for the isolation tests: too much memory, a native crash, a hang."""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn

from compress.techniques.base import Context, Step


class Allocate(Step):
    """Allocates (and touches) `gb` gigabytes."""

    uses_ratio = False

    def __init__(self, gb: float) -> None:
        super().__init__()
        self.gb = gb

    def apply(self, model: nn.Module, ratio: float | None, ctx: Context) -> nn.Module:
        torch.ones(int(self.gb * 2**30) // 4)
        return model


class Segfault(Step):
    """Kills its own process with SIGSEGV, as a crash in native code does."""

    uses_ratio = False

    def apply(self, model: nn.Module, ratio: float | None, ctx: Context) -> nn.Module:
        os.kill(os.getpid(), signal.SIGSEGV)
        return model


class Hang(Step):
    uses_ratio = False

    def apply(self, model: nn.Module, ratio: float | None, ctx: Context) -> nn.Module:
        time.sleep(600)
        return model
