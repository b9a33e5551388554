"""The one signature every technique step has, and the runtime objects it is called with."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from compress.data import Data, make_loader
from compress.errors import UserError
from compress.formats.base import Format
from compress.formats.ptl import Ptl


def choice(knob: str, value: str, allowed: Sequence[str]) -> str:
    """`value` when it is one of `allowed`; else a one-line UserError naming the options."""
    if value not in allowed:
        raise UserError(f"{knob}={value!r} is not an option; use one of {', '.join(allowed)}")
    return value


@dataclass
class Context:
    """Runtime objects a step may use; hyperparameters come from the step's YAML instead."""

    data: Data
    example: torch.Tensor  # one input batch of size 1, the shape the model is exported with
    base: nn.Module  # the trained base model (read-only): what the steps compress, the reference
    finetune: Callable[..., nn.Module]  # (model, epochs, *, lr, label, after_backward, after_step) -> model: the
    # one way a step trains: train: and finetune: (optimizer, schedule, clipping, distillation) with its hooks
    qengine: str  # quantized engine of the target device: qnnpack (phones), x86, fbgemm, onednn
    seed: int
    batch_size: int = 64
    between_epochs: int = 1  # fine-tune epochs between iterations / steps (finetune.between_epochs)
    notes: list[str] = field(default_factory=list)  # lines for the row's `notes` column
    format: Format = field(default_factory=Ptl)  # the export format: the int8 steps take its quantization route
    cache_dir: str | None = None  # the stage cache, for what a step derives from the base model (None: not cached)
    data_key: str = ""  # identity of the data set and threads (no paths): the key part of such derived results
    wait_s: float = 86400  # how long to wait for another job deriving the same result (limits.wait_s)

    def train_batches(self, n: int):
        """The first `n` input batches of the training set (calibration, gradients for importance)."""
        for i, (x, _) in enumerate(make_loader(self.data.train, self.batch_size, shuffle=True, seed=self.seed)):
            if i >= n:
                return
            yield x

    def note(self, line: str) -> None:
        self.notes.append(line)


class Step:
    """One compression step. `apply` runs before the fine-tune stage, `finalize` after it.

    `uses_ratio` says whether the top-level `ratio` means something to this step; a step built with
    a fixed `ratio` in its YAML ignores the top-level one. `uses_qengine`: the step packs int8 weights for the
    device's quantized engine, which then joins the variant's key.
    """

    uses_ratio: bool = True
    uses_qengine: bool = False  # whether the result depends on the device's quantized engine (int8 weights)

    def __init__(self, ratio: float | None = None):
        self.ratio = ratio

    @property
    def takes_sweep_ratio(self) -> bool:
        return self.uses_ratio and self.ratio is None

    def apply(self, model: nn.Module, ratio: float, ctx: Context) -> nn.Module:
        return model

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return model


@contextmanager
def quantized_engine(name: str) -> Iterator[None]:
    """Run the block with `name` as torch's quantized engine (weights are packed for the current one)."""
    if name not in torch.backends.quantized.supported_engines:
        supported = ", ".join(torch.backends.quantized.supported_engines)
        raise UserError(f"quantized engine {name!r} is not available in this torch build; use one of: {supported}")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def forward_calls(
    model: nn.Module, example: torch.Tensor, kind: type | tuple[type, ...]
) -> list[tuple[str, nn.Module, torch.Size]]:
    """(name, module, input shape) of every `kind` layer, in the order a forward pass of `example` calls them."""
    calls: list[tuple[str, nn.Module, torch.Size]] = []

    def record(name: str):
        return lambda module, args, _out: calls.append((name, module, args[0].shape))

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, kind)]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for hook in hooks:
            hook.remove()
    return calls
