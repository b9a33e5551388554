"""The PT2E int8 route (.pte files): torch.export → XNNPACKQuantizer annotations → torchao's prepare_pt2e /
prepare_qat_pt2e → calibration or training (by the steps in quant.py) → convert_pt2e. The Pte exporter lowers the
converted graph's quantize/dequantize pairs to XNNPACK's int8 kernels.

The graph is exported with a dynamic batch dimension, so calibration and QAT run on whole training batches; the
exporter re-exports the converted graph at batch size 1, the file's static input shape. Weights are int8 per
channel (symmetric), activations int8 per tensor.

The steps are written once for any PT2E quantizer (`Quantizers`): XNNPACK's here, LiteRT's in litert_pt2e.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from torch import nn
from torch.export import Dim
from torchao.quantization.pt2e import (
    HistogramObserver,
    MinMaxObserver,
    move_exported_model_to_eval,
    move_exported_model_to_train,
)
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from torchao.quantization.pt2e.quantizer import Quantizer

from compress.errors import cannot
from compress.techniques.base import Context

OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
EPS = 2**-12  # the smallest scale, as in executorch's get_symmetric_quantization_config


@dataclasses.dataclass(frozen=True)
class Quantizers:
    """What a PT2E route quantizes with: `config` (a backend's get_symmetric_quantization_config: is_per_channel,
    is_qat, is_dynamic), `every` (a quantizer annotating the whole graph with a config), `linears` (the one
    quant_dynamic takes: XNNPACK's annotates the Linear layers only) and `fold` (convert_pt2e folds the weights'
    quantize ops into int8 constants)."""

    config: Callable[..., Any]
    every: Callable[[Any], Quantizer]
    linears: Callable[[Any], Quantizer]
    fold: bool = True


XNNPACK = Quantizers(
    get_symmetric_quantization_config,
    lambda config: XNNPACKQuantizer().set_global(config),
    lambda config: XNNPACKQuantizer().set_module_type(nn.Linear, config),
)


class Exported(nn.Module):
    """A PT2E graph (prepared or converted) as a module whose `train()` / `eval()` switch the graph's dropout and
    batch norm (an exported graph refuses nn.Module's, and torchao's allow_exported_model_train_eval returns None
    where fine-tuning expects the module). `quantizer`: what annotated it (LiteRT's converter reads it)."""

    def __init__(self, exported: torch.fx.GraphModule, quantizer: Quantizer | None = None):
        super().__init__()
        self.exported, self.quantizer = exported, quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exported(x)

    def train(self, mode: bool = True) -> Exported:
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.exported)
        self.training = mode
        return self


def _graph(model: nn.Module, ctx: Context) -> torch.fx.GraphModule:
    """`model` captured by torch.export with a dynamic batch dimension; a model it cannot capture gets one line."""
    pair = ctx.example.expand(2, *ctx.example.shape[1:])  # batch 2: torch.export specializes a batch of 1
    try:
        return torch.export.export(model, (pair,), dynamic_shapes=({0: Dim("batch")},)).module()
    except Exception as exc:  # torch.export raises UserError, Unsupported, GuardOnDataDependentSymNode, ...
        raise cannot(
            model, "captured by torch.export for PT2E int8", exc,
            "make its forward exportable (no data-dependent control flow) or use export=ptl",
        ) from exc


def dynamic(model: nn.Module, ctx: Context, quantizers: Quantizers = XNNPACK) -> nn.Module:
    """int8 weights for every Linear (per channel), activations quantized at run time; the rest stays fp32."""
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        ctx.note("quant_dynamic: no Linear layer, nothing quantized")
    quantizer = quantizers.linears(quantizers.config(is_per_channel=True, is_dynamic=True))
    prepared = prepare_pt2e(_graph(model.eval(), ctx), quantizer)
    with torch.no_grad():
        prepared(ctx.example)  # the weight observers see the weights
    return Exported(convert_pt2e(prepared, fold_quantize=quantizers.fold), quantizer).eval()


def prepare_static(model: nn.Module, ctx: Context, observer: str, quantizers: Quantizers = XNNPACK) -> nn.Module:
    """The exported graph with `observer` on activations and per-channel observers on weights, in eval mode."""
    config = quantizers.config(is_per_channel=True)
    observe = OBSERVERS[observer].with_args(eps=EPS)
    activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observe)
    quantizer = quantizers.every(dataclasses.replace(config, input_activation=activation, output_activation=activation))
    return Exported(prepare_pt2e(_graph(model.eval(), ctx), quantizer), quantizer).eval()


def prepare_qat(model: nn.Module, ctx: Context, quantizers: Quantizers = XNNPACK) -> nn.Module:
    """The graph exported in training mode with fake-quant (moving-average ranges, per-channel weights; batch norm
    folded into the preceding convolution), in training mode."""
    quantizer = quantizers.every(quantizers.config(is_per_channel=True, is_qat=True))
    return Exported(prepare_qat_pt2e(_graph(model.train(), ctx), quantizer), quantizer).train()


def _without_batch_counters(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """`graph` without the `num_batches_tracked += 1` of batch norms PT2E does not fold into a convolution (e.g.
    BatchNorm1d after a Linear, captured in training mode for QAT): an inference graph has no use for the count,
    and the .pte would run the increment on portable kernels at every call."""
    for node in list(graph.graph.nodes):
        if node.target == torch.ops.aten.add_.Tensor and str(node.args[0].target).endswith("num_batches_tracked"):
            graph.graph.erase_node(node)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


def convert(model: nn.Module, ctx: Context, quantizers: Quantizers = XNNPACK) -> nn.Module:
    """The prepared graph with its observers replaced by int8 quantize/dequantize pairs (weights folded into int8
    constants where the route folds)."""
    prepared = model.eval()
    graph = convert_pt2e(prepared.exported, fold_quantize=quantizers.fold)
    return Exported(_without_batch_counters(graph), prepared.quantizer).eval()
