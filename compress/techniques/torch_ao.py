"""The torch.ao int8 route (.ptl files): dynamic, FX static post-training and FX quantization-aware preparation,
and conversion to modules packed for torch's quantized engine.

torch.ao is the only route to quantized TorchScript files and every torch.ao call of the project lives here (the
steps in quant.py orchestrate it). The engine is the target device's (`ctx.qengine`): weights are packed for it,
and activations use 7 bits on x86/fbgemm (their int16 accumulation saturates on 8-bit activations) and 8 bits on
qnnpack/onednn.
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

from compress.errors import cannot
from compress.techniques.base import Context, quantized_engine

# Upstream deprecated torch.ao.quantization (and quantized tensors, and observers' `reduce_range`) in favour of
# torchao / PT2E, but it still is the only way to get quantized .ptl files, and the same warnings would repeat for
# every variant of a sweep.
DEPRECATIONS = (
    r"torch\.ao\.quantization is deprecated",
    r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation",
    r"Please use quant_min and quant_max",
)


def silence_deprecations() -> None:
    """Hide torch.ao's deprecation warnings in this process (the job's entry point, cli.run, calls it)."""
    for message in DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message)

OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
DYNAMIC_LAYERS = {nn.Linear: per_channel_dynamic_qconfig, nn.LSTM: default_dynamic_qconfig,
                  nn.GRU: default_dynamic_qconfig}  # fmt: skip


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


def _prepared(prepare: Callable, model: nn.Module, mapping: QConfigMapping, ctx: Context) -> nn.Module:
    """FX-trace and insert observers; a model FX cannot trace gets a one-line UserError."""
    try:
        return prepare(model, mapping, example_inputs=(ctx.example,))
    except Exception as exc:  # FX raises TraceError, TypeError, NotImplementedError, ... depending on the cause
        raise cannot(
            model, "FX-traced for int8 quantization", exc,
            "make its forward traceable or use technique=quant_dynamic",
        ) from exc


def dynamic(model: nn.Module, ctx: Context) -> nn.Module:
    """int8 weights for Linear (per channel), LSTM and GRU, activations quantized at run time."""
    if not any(isinstance(m, tuple(DYNAMIC_LAYERS)) for m in model.modules()):
        ctx.note("quant_dynamic: no Linear/LSTM/GRU layer, nothing quantized")
    with quantized_engine(ctx.qengine):
        return quantize_dynamic(model.eval(), DYNAMIC_LAYERS, dtype=torch.qint8)


def prepare_static(model: nn.Module, ctx: Context, observer: str) -> nn.Module:
    """The model FX-traced with `observer` on activations and per-channel observers on weights."""
    return _prepared(prepare_fx, model.eval(), static_qconfig_mapping(observer, ctx.qengine), ctx)


def prepare_qat(model: nn.Module, ctx: Context) -> nn.Module:
    """The model FX-traced with fake-quant (moving-average ranges, per-channel weights), in training mode."""
    return _prepared(prepare_qat_fx, model.train(), qat_qconfig_mapping(ctx.qengine), ctx)


def convert(model: nn.Module, ctx: Context) -> nn.Module:
    """The prepared model converted to int8 modules packed for the device's engine."""
    with quantized_engine(ctx.qengine):
        return convert_fx(model.eval())
