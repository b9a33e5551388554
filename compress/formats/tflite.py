"""The LiteRT format (.tflite): litert-torch converts the model (torch.export at the example's shape, batch 1 → LiteRT's
converter) to a flatbuffer; loaded back with ai-edge-litert's interpreter (XNNPACK on the CPU), what LiteRT on Android
and its benchmark_model run. int8 files come from the LiteRT PT2E route (compress/techniques/litert_pt2e.py): the
converter gets the route's quantizer and writes int8 kernels (static int8 files take and give int8 tensors, quantized
with the scale and zero point the file states).

Needs the `litert` extra; importing this module imports litert-torch once in the job process (~6 s), so the stage
children it forks do not each pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.cache import atomic_write
from compress.errors import UserError, cannot
from compress.formats.base import Format

try:
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter
    from litert_torch.quantize.quant_config import QuantConfig
except ImportError as exc:
    raise UserError(f'export=tflite needs litert-torch and ai-edge-litert ({exc}); pip install -e ".[litert]"') from exc

litert_torch.config.show_progress = False  # its progress lines would go to the job's terminal


def export_tflite(model: nn.Module, example: torch.Tensor, path: Path) -> dict:
    """Convert `model` on `example` (its shape is the file's) and write the .tflite; a model litert-torch cannot
    convert (an operator it has no lowering for, a forward torch.export cannot capture) gets one line."""
    quantizer = getattr(model, "quantizer", None)  # the int8 route's: the converter picks static or dynamic kernels
    config = QuantConfig(pt2e_quantizer=quantizer) if quantizer is not None else None
    try:
        converted = litert_torch.convert(model.eval(), (example,), quant_config=config)
    except Exception as exc:  # RuntimeError "Lowering not found: aten.cumprod.default", torch.export's errors, ...
        raise cannot(
            model, "converted to .tflite by litert-torch", exc,
            "replace the layers that use what it names or use export=pte",
        ) from exc  # fmt: skip
    atomic_write(Path(path), converted.export)
    return {"format": "tflite", "export_note": ""}


def _to_file_type(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float array as the tensor `detail` describes it: quantized with its scale and zero point when integer."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _from_file_type(y: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor as floats (dequantized when integer)."""
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def load_tflite(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The file loaded by LiteRT's interpreter (XNNPACK, torch's thread count), as a callable on a float batch: one
    sample per call, since the file's batch size is 1."""
    interpreter = Interpreter(model_path=str(path), num_threads=torch.get_num_threads())
    interpreter.allocate_tensors()
    (into,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def one(sample: torch.Tensor) -> torch.Tensor:
        interpreter.set_tensor(into["index"], _to_file_type(sample.numpy(), into))
        interpreter.invoke()
        return torch.from_numpy(_from_file_type(interpreter.get_tensor(out["index"]), out))

    return lambda x: torch.cat([one(sample) for sample in x.split(1)])


class Tflite(Format):
    """`.tflite` files, what LiteRT's interpreter and benchmark_model load; int8 through LiteRT's PT2E quantizer."""

    name = "tflite"
    int8_route = "litert_pt2e"
    packages = ("litert-torch", "litert-converter", "ai-edge-litert", "torchao")

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> dict:
        return export_tflite(model, example, path)

    def load(self, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        return load_tflite(path)
