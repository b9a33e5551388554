"""Export to the TorchScript lite interpreter (.ptl) and load it back to measure the artifact itself."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from compress.cache import atomic_write

log = logging.getLogger(__name__)


def _mobile_optimized(script: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, str]:
    """`optimize_for_mobile` where the installed torch supports it, else the module as is and why."""
    from torch.utils.mobile_optimizer import optimize_for_mobile

    try:
        return optimize_for_mobile(script), ""
    except RuntimeError as exc:  # PyPI wheels: "XNNPACK is not enabled"
        return script, f"optimize_for_mobile unavailable: {str(exc).splitlines()[0]}"


def export_ptl(model: nn.Module, example: torch.Tensor, path: Path, optimize: bool = True) -> dict:
    """Trace `model` on `example`, save it for the lite interpreter, return what was done."""
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream and tracing warns
        script = torch.jit.trace(model, example)
        note = "optimize disabled in export config"
        if optimize:
            script, note = _mobile_optimized(script)
        atomic_write(path, lambda tmp: script._save_for_lite_interpreter(tmp))
    return {"format": "ptl", "mobile_optimized": not note, "export_note": note}


def load_ptl(path: Path):
    """The exported file, loaded with the lite interpreter (what a phone runs)."""
    from torch.jit.mobile import _load_for_lite_interpreter

    return _load_for_lite_interpreter(str(path))
