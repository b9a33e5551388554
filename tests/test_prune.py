"""Pruning techniques: magnitude (zeroes, dense storage) and channel pruning (a physically smaller model)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import fast_host, make_context
from torch import nn
from torch.utils.data import Subset
from torchvision.models import resnet18

from compress import metrics
from compress.config import build
from compress.data import Data
from compress.errors import UserError
from compress.formats.ptl import export_ptl, load_ptl
from compress.pipeline import run_variant
from compress.techniques.base import Context
from compress.techniques.layers import LayerPolicy
from compress.techniques.prune import ChannelPrune, MagnitudePrune
from compress.train import evaluate


class BNNet(nn.Module):
    """A small conv net with BatchNorm, so every importance (bn_scale too) applies."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture
def small_context(mnist5k, lenet) -> Context:
    """Like `lenet_context`, fine-tuning on the first 640 training images only (fast)."""
    data = Data(Subset(mnist5k.train, range(640)), mnist5k.test, mnist5k.input_shape, mnist5k.num_classes)
    return make_context(data, lenet)


@pytest.fixture
def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return BNNet().eval()


def layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in layers(model)]


def nonzero_fraction(model: nn.Module) -> float:
    ws = weights(model)
    return sum(int(torch.count_nonzero(w)) for w in ws) / sum(w.numel() for w in ws)


def widths(model: nn.Module) -> list[int]:
    return [w.shape[0] for w in weights(model)]


def structure(model: nn.Module, example: torch.Tensor) -> dict:
    return metrics.count_params(model) | {"macs": metrics.count_macs(model, example)}


# --- magnitude pruning ------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_zeroes_ratio_of_pruned_layers(lenet, lenet_context, scope):
    biases = [m.bias.clone() for m in layers(lenet)]
    pruned = MagnitudePrune(scope=scope).apply(lenet, 0.9, lenet_context)
    assert nonzero_fraction(pruned) <= 0.11
    if scope == "layer":
        assert all(torch.count_nonzero(w) <= 0.11 * w.numel() for w in weights(pruned))
    assert not any(name.endswith(("_orig", "_mask")) for name, _ in pruned.named_parameters())  # prune.remove
    assert all(torch.equal(b, m.bias) for b, m in zip(biases, layers(pruned), strict=True))  # biases stay


def test_magnitude_zeros_survive_finetune_until_finalize(lenet, small_context):
    step = MagnitudePrune()
    pruned = step.apply(lenet, 0.9, small_context)
    acc_before = evaluate(pruned, small_context.data.test)["acc_top1"]
    pruned = small_context.finetune(pruned, 1)
    assert nonzero_fraction(pruned) <= 0.10 + 1e-6
    assert evaluate(pruned, small_context.data.test)["acc_top1"] > acc_before
    pruned = step.finalize(pruned, small_context)
    x, y = next(iter(torch.utils.data.DataLoader(small_context.data.train, batch_size=64)))
    nn.functional.cross_entropy(pruned(x), y).backward()
    conv = pruned.features[0].weight
    assert torch.count_nonzero(conv.grad[conv == 0]) > 0  # the gradient mask is gone after finalize


def test_magnitude_export_keeps_dense_size_and_halves_gzip(lenet, lenet_context, tmp_path):
    export_ptl(lenet, lenet_context.example, tmp_path / "base.ptl")
    pruned = MagnitudePrune().apply(copy.deepcopy(lenet), 0.9, lenet_context)
    export_ptl(pruned, lenet_context.example, tmp_path / "pruned.ptl")
    base, small = metrics.file_sizes(tmp_path / "base.ptl"), metrics.file_sizes(tmp_path / "pruned.ptl")
    assert abs(small["size_bytes"] - base["size_bytes"]) <= 0.05 * base["size_bytes"]
    assert small["size_gzip_bytes"] <= 0.5 * base["size_gzip_bytes"]
    assert metrics.count_macs(pruned, lenet_context.example) == metrics.count_macs(lenet, lenet_context.example)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_iterative_magnitude_reaches_one_shot_sparsity(lenet, small_context, scope):
    one_shot = MagnitudePrune(scope=scope).apply(copy.deepcopy(lenet), 0.7, small_context)
    iterative = MagnitudePrune(scope=scope, iterations=3).apply(lenet, 0.7, small_context)
    assert nonzero_fraction(iterative) == nonzero_fraction(one_shot) == pytest.approx(0.3, abs=1e-4)
    if scope == "layer":
        assert [int(torch.count_nonzero(w)) for w in weights(iterative)] == [
            int(torch.count_nonzero(w)) for w in weights(one_shot)
        ]
    assert not torch.equal(weights(iterative)[2], weights(one_shot)[2])  # fine-tuned between increments


# --- channel pruning --------------------------------------------------------------------------------


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor", "bn_scale", "group_norm"])
def test_channel_prune_halves_macs_and_params(bn_net, mnist5k, importance, tmp_path):
    ctx = make_context(mnist5k, bn_net)
    before = structure(bn_net, ctx.example)
    pruned = ChannelPrune(importance=importance).apply(copy.deepcopy(bn_net), 0.5, ctx)
    after = structure(pruned, ctx.example)
    assert after["macs"] * 2 <= before["macs"]
    assert after["params"] * 2 <= before["params"]
    hidden = 64 if importance == "bn_scale" else 32  # bn_scale ranks only channels that have a BatchNorm
    assert widths(pruned) == [8, 16, 16, hidden, 10]  # the classifier keeps its 10 outputs
    export_ptl(pruned, ctx.example, tmp_path / "model.ptl")
    assert load_ptl(tmp_path / "model.ptl")(ctx.example).shape == (1, 10)


def test_channel_prune_lenet_and_global_scope(lenet, lenet_context):
    before = structure(lenet, lenet_context.example)
    uniform = ChannelPrune().apply(copy.deepcopy(lenet), 0.5, lenet_context)
    assert widths(uniform) == [3, 8, 60, 42, 10]
    glob = ChannelPrune(scope="global").apply(lenet, 0.5, lenet_context)
    assert sum(widths(glob)[:-1]) == sum(widths(uniform)[:-1])  # the same number of channels removed...
    assert widths(glob) != widths(uniform)  # ...but not the same in every layer
    assert structure(glob, lenet_context.example)["params"] * 2 <= before["params"]


def test_channel_prune_keeps_a_channel_in_narrow_layers(lenet, lenet_context):
    pruned = ChannelPrune().apply(lenet, 0.9, lenet_context)
    assert widths(pruned) == [1, 1, 11, 8, 10]  # 6 and 16 channels at 0.9 would be pruned away entirely


def test_bn_scale_on_a_model_without_batchnorm_is_a_user_error(lenet, lenet_context):
    with pytest.raises(UserError, match="BatchNorm.*importance=l1"):
        ChannelPrune(importance="bn_scale").apply(lenet, 0.5, lenet_context)


@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_iterative_channel_prune_reaches_one_shot_channels(lenet, small_context, scope):
    one_shot = ChannelPrune(scope=scope).apply(copy.deepcopy(lenet), 0.5, small_context)
    iterative = ChannelPrune(scope=scope, iterations=3).apply(lenet, 0.5, small_context)
    assert sum(widths(iterative)) == sum(widths(one_shot))
    if scope == "uniform":
        assert widths(iterative) == widths(one_shot)


def test_resnet18_prunes_across_skip_connections(make_cfg):
    data = build(make_cfg("dataset=fake").dataset)
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    ctx = make_context(data, model)
    assert LayerPolicy.of(classifier=False).choose(model, ctx.example)[1] == {"fc": "classifier"}
    before = structure(model, ctx.example)
    pruned = ChannelPrune().apply(model, 0.5, ctx)
    assert pruned.conv1.out_channels == 32 and pruned.layer4[1].conv2.out_channels == 256
    assert pruned.layer1[1].conv2.out_channels == pruned.bn1.num_features  # added to the stem's output
    assert pruned.fc.out_features == 10
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert structure(pruned, ctx.example)["macs"] * 3 <= before["macs"]


# --- the YAML knobs and the real pipeline -----------------------------------------------------------


def test_technique_knobs_reach_the_step(make_cfg):
    cfg = make_cfg("technique=prune_channel", "technique.steps.prune.importance=taylor",
                   "technique.steps.prune.iterations=3")
    step = build(cfg.technique.steps.prune)
    assert (type(step), step.importance, step.iterations, step.takes_sweep_ratio) == (ChannelPrune, "taylor", 3, True)
    fixed = build({"_target_": "compress.techniques.prune.MagnitudePrune", "ratio": 0.8})  # as in combined pipelines
    assert (fixed.ratio, fixed.takes_sweep_ratio) == (0.8, False)
    with pytest.raises(UserError, match="scope='local'.*layer, global"):
        MagnitudePrune(scope="local")
    with pytest.raises(UserError, match="iterations must be"):
        ChannelPrune(iterations=0)


@pytest.mark.parametrize("retrain", [True, False])
def test_retrain_increments_decides_the_finetunes_between_increments(lenet, mnist5k, retrain):
    calls = []
    ctx = make_context(mnist5k, lenet)
    ctx.finetune = lambda model, epochs: calls.append(epochs) or model
    ChannelPrune(iterations=3, retrain_increments=retrain).apply(copy.deepcopy(lenet), 0.5, ctx)
    MagnitudePrune(iterations=3, retrain_increments=retrain).apply(lenet, 0.5, ctx)
    assert calls == ([1] * 4 if retrain else [])


@pytest.mark.parametrize(
    "technique", ["prune_channel", "prune_magnitude", "prune_slim", "prune_quant", "prune_qat", "deep_compression"]
)
def test_every_pruning_technique_passes_retrain_increments_to_its_step(make_cfg, technique):
    """`technique.finetune_between` is about fine-tuning between a technique's steps; the pruning step's own
    `retrain_increments` reaches it from every technique that prunes (prune_qat used to drop it)."""
    cfg = make_cfg(f"technique={technique}", "technique.steps.prune.iterations=3",
                   "technique.steps.prune.retrain_increments=false")
    step = build(cfg.technique.steps.prune)
    assert (step.iterations, step.retrain_increments) == (3, False)


def run(make_cfg, *overrides: str) -> dict:
    cfg = make_cfg(*overrides, "train.epochs=1", "finetune.epochs=1")
    row: dict = {}
    run_variant(cfg, fast_host(), row)
    base = build(cfg.model)
    return row | {"base": metrics.count_params(base) | {"macs": metrics.count_macs(base, torch.zeros(1, 1, 28, 28))}}


@pytest.mark.slow
def test_pipeline_prune_channel(make_cfg):
    row = run(make_cfg, "technique=prune_channel", "ratio=0.5")
    assert row["status"] == "ok" and row["ratio"] == 0.5
    assert row["macs"] * 2 <= row["base"]["macs"] and row["params"] * 2 <= row["base"]["params"]
    # measured: compression 3.08×, MACs 3.11× fewer, accuracy +3.3 pt over a base trained 1 epoch (0.87)
    assert row["compression_x"] > 2.5 and row["macs_reduction_x"] > 2.5 and row["acc_delta"] > -0.05
    assert "channel pruning (l1, uniform): 236 → 123 channels" in row["notes"]


@pytest.mark.slow
def test_pipeline_prune_magnitude(make_cfg):
    row = run(make_cfg, "technique=prune_magnitude", "ratio=0.9")
    assert row["status"] == "ok"
    assert row["params"] == row["base"]["params"] and row["macs"] == row["base"]["macs"]
    assert row["nonzero_params"] <= 0.11 * row["params"]  # still sparse after the fine-tune stage
    assert 0.95 < row["compression_x"] < 1.05 and row["nonzero_reduction_x"] > 8  # measured 9.7×
    assert row["acc_delta"] > -0.15  # measured -8.1 pt: 90% of the weights gone, one fine-tune epoch
