"""Int8 quantization with torch.ao: dynamic, FX static post-training (PTQ), FX quantization-aware training (QAT).

torch.ao is the only route to quantized TorchScript (.ptl) files, and every torch.ao call of the project lives
here, so an ExecuTorch route (PT2E, XNNPACKQuantizer, .pte) can be added beside this module. The quantized
engine is the target device's (`ctx.qengine`): weights are packed for it, and activations use 7 bits on
x86/fbgemm (their int16 accumulation saturates on 8-bit activations) and 8 bits on qnnpack/onednn.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.ao.quantization import (
    FusedMovingAvgObsFakeQuantize,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    QConfig,
    QConfigMapping,
    default_dynamic_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    per_channel_dynamic_qconfig,
    quantize_dynamic,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from compress.errors import UserError
from compress.techniques.base import Context, Step, quantized_engine

# The one place torch.ao's warnings are silenced: upstream deprecated torch.ao.quantization (and quantized
# tensors, and observers' `reduce_range`) in favour of torchao / PT2E, but it still is the only way to get
# quantized .ptl files, and the same warnings would repeat for every variant of a sweep.
for _message in (
    r"torch\.ao\.quantization is deprecated",
    r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation",
    r"Please use quant_min and quant_max",
):
    warnings.filterwarnings("ignore", message=_message)

OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}


def _activation_max(engine: str) -> int:
    return 127 if engine in ("x86", "fbgemm") else 255


def static_qconfig_mapping(observer: str, engine: str) -> QConfigMapping:
    """The engine's default mapping (fixed-range ops, per-tensor ConvTranspose) with per-channel weights and
    the chosen activation observer everywhere else."""
    activation = OBSERVERS[observer].with_args(dtype=torch.quint8, quant_min=0, quant_max=_activation_max(engine))
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return get_default_qconfig_mapping(engine).set_global(QConfig(activation=activation, weight=weight))


def qat_qconfig_mapping(engine: str) -> QConfigMapping:
    """Fake-quant with moving-average min/max ranges, per-channel weights, for any engine."""
    activation = FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, dtype=torch.quint8, quant_min=0, quant_max=_activation_max(engine)
    )
    weight = FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver, dtype=torch.qint8, quant_min=-128, quant_max=127,
        qscheme=torch.per_channel_symmetric,
    )  # fmt: skip
    return get_default_qat_qconfig_mapping(engine).set_global(QConfig(activation=activation, weight=weight))


def _prepare(prepare: Callable, model: nn.Module, mapping: QConfigMapping, ctx: Context) -> nn.Module:
    """FX-trace and insert observers; a model FX cannot trace gets a one-line UserError."""
    try:
        return prepare(model, mapping, example_inputs=(ctx.example,))
    except Exception as exc:  # FX raises TraceError, TypeError, NotImplementedError, ... depending on the cause
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"{type(model).__name__} cannot be FX-traced for int8 quantization ({first}); "
            "make its forward traceable or use technique=quant_dynamic"
        ) from exc


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
    """int8 weights for Linear (per channel), LSTM and GRU; activations quantized on the fly at run time.

    Runs in `finalize`, so the pipeline's fine-tune stage trains the float model first.
    """

    uses_ratio = False
    uses_qengine = True
    LAYERS = {nn.Linear: per_channel_dynamic_qconfig, nn.LSTM: default_dynamic_qconfig, nn.GRU: default_dynamic_qconfig}

    def __init__(self) -> None:
        super().__init__()

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        if not any(isinstance(m, tuple(self.LAYERS)) for m in model.modules()):
            ctx.note("quant_dynamic: no Linear/LSTM/GRU layer, nothing quantized")
        with quantized_engine(ctx.qengine):
            return quantize_dynamic(model.eval(), self.LAYERS, dtype=torch.qint8)


class StaticQuant(Step):
    """Post-training static int8 in FX graph mode: prepare_fx → calibrate on training batches → convert_fx.

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
        mapping = static_qconfig_mapping(self.observer, ctx.qengine)
        prepared = _prepare(prepare_fx, model.eval(), mapping, ctx)
        _calibrate(prepared, ctx, self.calibration_batches)
        with quantized_engine(ctx.qengine):
            return convert_fx(prepared)


class QAT(Step):
    """Quantization-aware training: prepare_qat_fx in `apply` (observers seeded on `calibration_batches`
    training batches, so `finetune.epochs=0` still converts sensibly), the pipeline's fine-tune stage trains
    with fake-quant, convert_fx in `finalize`."""

    uses_ratio = False
    uses_qengine = True

    def __init__(self, calibration_batches: int = 10) -> None:
        super().__init__()
        self.calibration_batches = _check_batches(calibration_batches)

    def apply(self, model: nn.Module, ratio: float | None, ctx: Context) -> nn.Module:
        prepared = _prepare(prepare_qat_fx, model.train(), qat_qconfig_mapping(ctx.qengine), ctx)
        _calibrate(prepared, ctx, self.calibration_batches)
        return prepared

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        with quantized_engine(ctx.qengine):
            return convert_fx(model.eval())
