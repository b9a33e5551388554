"""Weight clustering: k-means, shared values through fine-tuning, dense size kept, gzip size dropped."""

from __future__ import annotations

import torch
from torch import nn

from compress.config import build
from compress.formats.ptl import export_ptl
from compress.metrics import file_sizes
from compress.techniques.cluster import Cluster, kmeans_1d
from compress.train import evaluate


def test_kmeans_finds_well_separated_groups():
    values = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 5.2, 10.0, 10.2])
    centroids, labels = kmeans_1d(values, 3)
    assert torch.allclose(centroids.sort().values, torch.tensor([0.1, 5.1, 10.1]))
    assert len(set(labels[:3].tolist())) == len(set(labels[3:6].tolist())) == len(set(labels[6:].tolist())) == 1


def test_cluster_bits4_shares_16_values_through_finetune_and_gzips(lenet, lenet_context, mnist5k, tmp_path):
    step = Cluster(bits=4)
    model = step.apply(lenet, None, lenet_context)
    clustered = {name: p.detach().clone() for name, p in model.named_parameters() if p.dim() > 1}
    model = step.finalize(lenet_context.finetune(model, 1), lenet_context)
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weights) == 5 and all(w.unique().numel() <= 16 for w in weights)
    trained = {name: p for name, p in model.named_parameters() if p.dim() > 1}
    assert any(not torch.equal(clustered[name], trained[name]) for name in clustered)  # the centroids trained
    export_ptl(lenet_context.base, lenet_context.example, tmp_path / "fp32.ptl", optimize=False)
    export_ptl(model, lenet_context.example, tmp_path / "cluster.ptl", optimize=False)
    fp32, shared = file_sizes(tmp_path / "fp32.ptl"), file_sizes(tmp_path / "cluster.ptl")
    assert shared["size_bytes"] >= 0.95 * fp32["size_bytes"]  # dense fp32: no saving claimed
    assert fp32["size_gzip_bytes"] / shared["size_gzip_bytes"] >= 2
    base_acc = evaluate(lenet_context.base, mnist5k.test)["acc_top1"]
    assert evaluate(model, mnist5k.test)["acc_top1"] >= base_acc - 0.02


def test_cluster_bits_knob_and_no_ratio(make_cfg):
    step = build(make_cfg("technique=cluster", "technique.steps.cluster.bits=3").technique.steps.cluster)
    assert step.bits == 3 and not step.takes_sweep_ratio
