"""The LiteRT int8 route (.tflite files): the PT2E steps of pt2e.py with litert-torch's own PT2EQuantizer (int8
weights per channel, symmetric; int8 activations per tensor), converted with the weights' quantize ops left in the
graph (LiteRT's converter folds them itself). The Tflite exporter hands the quantizer to the converter, which then
writes int8 kernels: static (int8 in, int8 out) or dynamic range (float in and out, int8 weights).

Dynamic: the converter's dynamic-range int8 (float in and out, activations quantized at run time), which quantizes
the convolutions' weights as well as the Linear layers' (the other routes: Linear only).
QAT: litert-torch 0.10's quantizer cannot annotate a training graph with the installed torchao (its conv-BN patterns
are built through an API torchao changed): one line, until a release that can.
"""

from __future__ import annotations

from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
from torch import nn

from compress.errors import UserError, first_line
from compress.techniques import pt2e
from compress.techniques.base import Context


def _everything(config) -> PT2EQuantizer:
    """The quantizer with `config` as its global config: its dynamic annotation and the converter read only that."""
    return PT2EQuantizer().set_global(config)


LITERT = pt2e.Quantizers(get_symmetric_quantization_config, _everything, _everything, fold=False)


def dynamic(model: nn.Module, ctx: Context) -> nn.Module:
    return pt2e.dynamic(model, ctx, LITERT)


def prepare_static(model: nn.Module, ctx: Context, observer: str) -> nn.Module:
    return pt2e.prepare_static(model, ctx, observer, LITERT)


def prepare_qat(model: nn.Module, ctx: Context) -> nn.Module:
    try:
        return pt2e.prepare_qat(model, ctx, LITERT)
    except UserError:  # torch.export could not capture the model: its own line
        raise
    except Exception as exc:  # ValueError "Expected `mod` to be an instance of `torch.nn.Module`" (0.10)
        raise UserError(f"QAT cannot take LiteRT's int8 route: litert-torch's quantizer fails on the training graph "
                        f"({first_line(exc)[:120]}); use quant_static, or export=pte for QAT")  from exc  # fmt: skip


def convert(model: nn.Module, ctx: Context) -> nn.Module:
    return pt2e.convert(model, ctx, LITERT)
