"""Int8 quantization steps: dynamic, static post-training (PTQ), quantization-aware training (QAT).

Each step takes the int8 route of the export format (`ctx.format.int8_route`): torch.ao for .ptl files
(compress/techniques/torch_ao.py, packed for the device's quantized engine), PT2E for .pte files
(compress/techniques/pt2e.py, lowered to XNNPACK), LiteRT's PT2E quantizer for .tflite files
(compress/techniques/litert_pt2e.py, int8 kernels written by LiteRT's converter). A route provides `dynamic`,
`prepare_static`, `prepare_qat` and `convert`; the steps here calibrate and order them the same way for every route.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import nn

from compress.errors import UserError
from compress.formats.base import Format
from compress.techniques.base import Context, Step

ROUTES = {
    "torch.ao": "compress.techniques.torch_ao",
    "pt2e": "compress.techniques.pt2e",
    "litert_pt2e": "compress.techniques.litert_pt2e",
}  # imported when used
OBSERVERS = ("minmax", "histogram")  # activation range observers every route has


def route(fmt: Format) -> ModuleType:
    """The int8 route module of an export format; a format without one gets a one-line UserError. The variant's
    plan asks for it in the job process, so the stage children it forks find it imported."""
    if fmt.int8_route not in ROUTES:
        raise UserError(f"int8 techniques cannot export to .{fmt.name} files (the format has no int8 route); "
                        "use export=ptl, pte or tflite, or a float technique")  # fmt: skip
    return importlib.import_module(ROUTES[fmt.int8_route])


@torch.no_grad()
def _calibrate(model: nn.Module, ctx: Context, batches: int) -> None:
    """Run `batches` training batches through the observers (no training: eval mode, no gradients)."""
    model.eval()
    for x in ctx.train_batches(batches):
        model(x)


def _check_batches(batches: int) -> int:
    if not isinstance(batches, int) or batches < 1:
        raise UserError(f"calibration_batches must be a positive integer, got {batches!r}")
    return batches


class DynamicQuant(Step):
    """int8 weights (Linear; with torch.ao also LSTM and GRU); activations quantized on the fly at run time.

    Runs in `finalize`, so the pipeline's fine-tune stage trains the float model first.
    """

    uses_ratio = False
    uses_qengine = True

    def __init__(self) -> None:
        super().__init__()

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return route(ctx.format).dynamic(model, ctx)


class StaticQuant(Step):
    """Post-training static int8: prepare (observers) → calibrate on training batches → convert.

    Everything happens in `finalize`, after the pipeline's fine-tune stage (and after any earlier step,
    e.g. channel pruning or a low-rank decomposition).
    """

    uses_ratio = False
    uses_qengine = True

    def __init__(self, observer: str = "minmax", calibration_batches: int = 10) -> None:
        super().__init__()
        if observer not in OBSERVERS:
            raise UserError(f"unknown observer {observer!r}; use {' or '.join(OBSERVERS)}")
        self.observer, self.calibration_batches = observer, _check_batches(calibration_batches)

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        int8 = route(ctx.format)
        prepared = int8.prepare_static(model, ctx, self.observer)
        _calibrate(prepared, ctx, self.calibration_batches)
        return int8.convert(prepared, ctx)


class QAT(Step):
    """Quantization-aware training: fake-quant inserted in `apply` (ranges seeded on `calibration_batches`
    training batches, so `finetune.epochs=0` still converts sensibly), the pipeline's fine-tune stage trains
    with it, converted to int8 in `finalize`."""

    uses_ratio = False
    uses_qengine = True

    def __init__(self, calibration_batches: int = 10) -> None:
        super().__init__()
        self.calibration_batches = _check_batches(calibration_batches)

    def apply(self, model: nn.Module, ratio: float | None, ctx: Context) -> nn.Module:
        prepared = route(ctx.format).prepare_qat(model, ctx)
        _calibrate(prepared, ctx, self.calibration_batches)
        return prepared

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return route(ctx.format).convert(model, ctx)
