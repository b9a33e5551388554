"""What every export format provides: the exporter, the loader that runs the file for evaluation, and which
int8 route the quantizing steps take for it."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn


class Format:
    """One deployment format, built from `conf/export/<name>.yaml`."""

    name = ""  # the row's `format` and the file's suffix
    uses_qengine = False  # int8 files are packed for torch's quantized engine (device.qengine joins their cache key)
    int8_route = ""  # how the int8 steps quantize for it: a key of compress.techniques.quant.ROUTES ("" = none)
    packages: tuple[str, ...] = ()  # what writes and runs its files besides torch: their versions join the cache key

    def versions(self) -> dict[str, str]:
        return {package: version(package) for package in self.packages}

    @property
    def file_name(self) -> str:
        return f"model.{self.name}"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> dict:
        """Write `model` (traced/exported on `example`) to `path`; the row columns that say how."""
        raise NotImplementedError

    def load(self, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        """The exported file, loaded by the runtime a phone runs it with (accuracy is measured on it)."""
        raise NotImplementedError
