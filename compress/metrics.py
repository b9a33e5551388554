"""What the row says about a model and its file: parameters, non-zeros, MACs, sizes."""

from __future__ import annotations

import gzip
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn


def count_params(model: nn.Module) -> dict:
    """Parameter count and how many of them are non-zero (unstructured sparsity shows here)."""
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {"params": params, "nonzero_params": nonzero}


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of `example`, counted on the actual module."""
    macs, _ = tp.utils.count_ops_and_params(model, example)
    return int(macs)


def file_sizes(path: Path) -> dict:
    """The artifact's size on disk and gzip'ed at level 9 (what entropy coding would save)."""
    data = Path(path).read_bytes()
    return {"size_bytes": len(data), "size_gzip_bytes": len(gzip.compress(data, compresslevel=9))}
