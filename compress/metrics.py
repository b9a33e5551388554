"""What the row says about a model and its file: parameters, non-zeros, MACs, sizes."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> dict:
    """Parameter count and how many of them are non-zero (unstructured sparsity shows here)."""
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {"params": params, "nonzero_params": nonzero}


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the convolutions and matrix products of one forward pass of `example`,
    counted on the aten ops the actual module runs (so QAT-prepared and decomposed models count right).

    Runs on a copy in eval mode: a forward pass would move the range observers of a QAT-prepared model, and
    batch norm in training mode refuses a batch of one where a feature map has shrunk to 1×1."""
    twin = copy.deepcopy(model).eval()  # outside the counter: a PT2E graph's eval() rewrites it by tracing patterns
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        twin(example)
    return counter.get_total_flops() // 2


def file_sizes(path: Path) -> dict:
    """The artifact's size on disk and gzip'ed at level 9 (what entropy coding would save)."""
    data = Path(path).read_bytes()
    return {"size_bytes": len(data), "size_gzip_bytes": len(gzip.compress(data, compresslevel=9))}
