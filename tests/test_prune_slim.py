"""Network slimming: L1 sparse training of BatchNorm scales, then BN-scale channel pruning."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import fast_host, make_context
from test_prune import BNNet, widths
from torch.utils.data import Subset

from compress.config import build
from compress.data import Data
from compress.errors import UserError
from compress.formats.ptl import export_ptl, load_ptl
from compress.pipeline import run_variant
from compress.techniques.base import Context
from compress.techniques.slim import SlimPrune, bn_scales


@pytest.fixture
def bn_context(mnist5k) -> Context:
    """A BatchNorm conv net and the first 640 training images (fast sparse training)."""
    torch.manual_seed(0)
    data = Data(Subset(mnist5k.train, range(640)), mnist5k.test, mnist5k.input_shape, mnist5k.num_classes)
    return make_context(data, BNNet().eval())


def scale_mass(model: torch.nn.Module) -> float:
    return float(sum(g.abs().sum() for g in bn_scales(model)))


def test_l1_penalty_drives_bn_scales_down(bn_context):
    # each step moves every |γ| by lr·penalty towards zero: 10 steps · 0.05 · 0.5 = 0.25 of the initial 1.0
    plain = SlimPrune(penalty=0.0, sparsity_epochs=1, lr=0.05).sparsify(copy.deepcopy(bn_context.base), bn_context)
    sparse = SlimPrune(penalty=0.5, sparsity_epochs=1, lr=0.05).sparsify(copy.deepcopy(bn_context.base), bn_context)
    assert scale_mass(sparse) < 0.8 * scale_mass(plain)


def test_slim_removes_ratio_of_bn_channels_globally(bn_context, tmp_path):
    pruned = SlimPrune(penalty=1e-2, sparsity_epochs=1).apply(copy.deepcopy(bn_context.base), 0.5, bn_context)
    assert sum(widths(pruned)[:3]) == (16 + 32 + 32) // 2  # one |γ| threshold across the three BN layers
    assert widths(pruned)[3:] == [64, 10]  # no BatchNorm after the hidden linear: not ranked, not pruned
    export_ptl(pruned, bn_context.example, tmp_path / "model.ptl")
    assert load_ptl(tmp_path / "model.ptl")(bn_context.example).shape == (1, 10)


def test_slim_needs_batchnorm(lenet, lenet_context):
    with pytest.raises(UserError, match="BatchNorm"):
        SlimPrune().apply(lenet, 0.5, lenet_context)


@pytest.mark.slow
def test_pipeline_prune_slim_on_lenet_says_what_to_do(make_cfg):
    cfg = make_cfg("technique=prune_slim", "train.epochs=1", "finetune.epochs=1")
    assert build(cfg.technique.steps.prune).lr == cfg.finetune.lr
    with pytest.raises(UserError, match="LeNet5 has none; use technique=prune_channel"):
        run_variant(cfg, fast_host(), row={})
