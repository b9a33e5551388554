"""One layer policy for every step that picks layers (compress/techniques/layers.py): the classifier found by the
order the forward pass runs the layers, `skip` patterns honoured by pruning, weight sharing and low-rank alike, and
the dependency graph traced once per model structure however many sensitivity trials prune it."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch_pruning as tp
from torch import nn

from compress.errors import UserError
from compress.techniques.cluster import Cluster
from compress.techniques.layers import LayerPolicy
from compress.techniques.lowrank import SVDDecompose
from compress.techniques.prune import ChannelPrune, MagnitudePrune


class HeadFirst(nn.Module):
    """An MLP that registers its classifier before the layers that feed it."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(32, 10)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_the_classifier_is_the_last_layer_the_forward_pass_runs_not_the_last_registered(lenet_context):
    model = HeadFirst()
    chosen, left = LayerPolicy.of(classifier=False).choose(model, lenet_context.example)
    assert (list(chosen), left) == (["body.1", "body.3"], {"head": "classifier"})
    notes = []
    decomposed = SVDDecompose(rank=4).apply(model, None, dataclasses.replace(lenet_context, notes=notes))
    assert isinstance(decomposed.head, nn.Linear) and isinstance(decomposed.body[3], nn.Sequential)
    assert "svd left alone: head (classifier)" in notes


def test_skip_patterns_leave_their_layers_alone_in_every_kind_of_step(lenet, lenet_context):
    original = {n: p.detach().clone() for n, p in lenet.named_parameters()}
    once = {"retrain_increments": False}
    pruned = MagnitudePrune(skip=["features.*"], **once).apply(copy.deepcopy(lenet), 0.5, lenet_context)
    assert torch.equal(pruned.features[0].weight, original["features.0.weight"])
    assert torch.equal(pruned.features[3].weight, original["features.3.weight"])
    assert (pruned.classifier[1].weight == 0).float().mean() >= 0.5
    shared = Cluster(bits=2, skip=["classifier.5"]).apply(copy.deepcopy(lenet), None, lenet_context)
    assert torch.equal(shared.classifier[5].weight, original["classifier.5.weight"])
    assert shared.classifier[3].weight.unique().numel() <= 4
    narrowed = ChannelPrune(skip=["features.0"], **once).apply(copy.deepcopy(lenet), 0.5, lenet_context)
    assert narrowed.features[0].out_channels == 6 and narrowed.features[3].out_channels == 8


def test_a_skip_pattern_that_matches_no_layer_is_one_line_naming_the_layers(lenet, lenet_context):
    with pytest.raises(UserError, match=r"skip pattern 'featurs\.0' matches no layer of LeNet5 \(features\.0, "):
        MagnitudePrune(skip=["featurs.0"]).apply(lenet, 0.5, lenet_context)


def test_one_trace_of_the_layout_serves_every_sensitivity_trial(lenet, lenet_context, monkeypatch):
    traces, build = [], tp.DependencyGraph.build_dependency
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", lambda *a, **k: traces.append(a) or build(*a, **k))
    ChannelPrune(retrain_increments=False).apply(copy.deepcopy(lenet), 0.5, lenet_context)
    assert len(traces) == 2  # the layout, torch-pruning's own
    traces.clear()
    step = ChannelPrune(scope="sensitivity", retrain_increments=False)
    step.apply(lenet, 0.5, lenet_context)
    trials = 4 * 9  # 4 prunable layers (not the classifier) × 9 ratios, each torch-pruning's own trace
    assert len(traces) == 2 + trials  # was 3 + 2 × trials while each trial traced the layout again
