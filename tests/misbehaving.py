"""What misbehaves on purpose, for the tests: technique steps that take too much memory, crash in native code or hang;
a model whose forward branches on its input (no graph can capture it)."""

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


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: FX and torch.export cannot capture it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


class Cumprod(nn.Module):
    """A classifier on the running product of its squashed pixels: aten.cumprod, an operator litert-torch has no
    lowering for (model=custom takes it as model.target=misbehaving.Cumprod)."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x):
        return self.fc(torch.cumprod(torch.sigmoid(x.flatten(1)), dim=1))
