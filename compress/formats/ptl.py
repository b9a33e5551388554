"""The TorchScript lite-interpreter format (.ptl): traced, saved for the lite interpreter, loaded back with it."""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from compress.cache import atomic_write
from compress.errors import UserError, first_line
from compress.formats.base import Format

log = logging.getLogger(__name__)
MIN_BYTECODE_VERSION = 4  # the oldest version torch.jit.mobile._backport_for_mobile can write


def _mobile_optimized(script: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, str]:
    """`optimize_for_mobile` where the installed torch supports it, else the module as is and why."""
    from torch.utils.mobile_optimizer import optimize_for_mobile

    try:
        return optimize_for_mobile(script), ""
    except RuntimeError as exc:  # PyPI wheels: "... XNNPACK is not enabled. Please build with USE_XNNPACK=1"
        first = first_line(exc)
        reason = "XNNPACK is not enabled in this torch build" if "XNNPACK is not enabled" in first else first[:160]
        return script, f"optimize_for_mobile unavailable: {reason}"


def _backported(path: Path, version: int | None) -> int:
    """The file's lite-interpreter bytecode version, after rewriting it at `version` when that is older
    (for a phone binary built from an older PyTorch); a newer or equal `version` leaves the file as it is."""
    from torch.jit.mobile import _backport_for_mobile, _get_model_bytecode_version

    current = _get_model_bytecode_version(str(path))
    if version is None or version >= current:
        return current
    if version < MIN_BYTECODE_VERSION:
        raise UserError(f"export.bytecode_version={version} is too old; the oldest supported is {MIN_BYTECODE_VERSION}")

    def backport(tmp: str) -> None:
        if not _backport_for_mobile(str(path), tmp, version):
            raise UserError(f"cannot backport the .ptl from bytecode version {current} to {version}")

    atomic_write(path, backport)
    return _get_model_bytecode_version(str(path))


def _traced(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """`torch.jit.trace` on a thread of its own: the tracer writes the Python call stack into the file's debug
    records, and a fresh thread's stack is the same whichever launcher (basic, joblib, submitit, Ray) runs the job,
    so the same variant gives a byte-identical file everywhere."""

    def trace() -> torch.jit.ScriptModule:
        with torch.no_grad():  # grad mode is per thread
            return torch.jit.trace(model, example)

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(trace).result()


def export_ptl(
    model: nn.Module, example: torch.Tensor, path: Path, optimize: bool = True, bytecode_version: int | None = None
) -> dict:
    """Trace `model` on `example`, save it for the lite interpreter (backported to `bytecode_version`
    when given), return what was done."""
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream and tracing warns
        script = _traced(model, example)
        note = "optimize disabled in export config"
        if optimize:
            script, note = _mobile_optimized(script)
        atomic_write(path, lambda tmp: script._save_for_lite_interpreter(tmp))
    version = _backported(Path(path), bytecode_version)
    return {"format": "ptl", "mobile_optimized": not note, "export_note": note, "bytecode_version": version}


def load_ptl(path: Path):
    """The exported file, loaded with the lite interpreter (what a phone runs)."""
    from torch.jit.mobile import _load_for_lite_interpreter

    return _load_for_lite_interpreter(str(path))


class Ptl(Format):
    """`.ptl` files, what speed_benchmark_torch and the PyTorch Android runtime load; int8 through torch.ao."""

    name = "ptl"
    uses_qengine = True
    int8_route = "torch.ao"

    def __init__(self, optimize: bool = True, bytecode_version: int | None = None):
        self.optimize, self.bytecode_version = optimize, bytecode_version

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> dict:
        return export_ptl(model, example, path, self.optimize, self.bytecode_version)

    def load(self, path: Path):
        return load_ptl(path)
