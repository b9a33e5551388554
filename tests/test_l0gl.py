"""MobilePrune (prune_l0gl): the exact prox against brute force, exact channel removal, the ratio reached, and
the technique on LeNet-5 / MNIST-5k (channels gone, MACs down, accuracy kept)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from conftest import fast_host, make_context
from test_prune import BNNet, structure, widths
from torch import nn
from torch.utils.data import Subset

from compress.config import build
from compress.data import Data
from compress.errors import UserError
from compress.pipeline import run_variant
from compress.techniques.groups import prunable_groups
from compress.techniques.l0gl import (
    ChannelGroups,
    L0GroupPrune,
    channel_groups,
    prox_l0_group,
    remove_dead_channels,
)
from compress.techniques.layers import LayerPolicy
from compress.train import evaluate

HIDDEN = LayerPolicy.of(classifier=False)  # the groups channel pruning may prune


def objective(z: torch.Tensor, x: torch.Tensor, l0: float, group: float) -> torch.Tensor:
    """½‖z − x‖² + l0·‖z‖₀ + group·‖z‖₂ of every row."""
    return 0.5 * ((z - x) ** 2).sum(-1) + l0 * (z != 0).sum(-1) + group * z.norm(dim=-1)


def brute_force(x: torch.Tensor, l0: float, group: float) -> torch.Tensor:
    """The best objective of each row over every support S: on S the group-lasso minimizer x_S·(1 − group/‖x_S‖)₊
    (the textbook block soft threshold), zero elsewhere."""
    n = x.shape[1]
    supports = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=x.dtype)  # [2^n, n]
    restricted = x[:, None, :] * supports  # [rows, 2^n, n]
    norm = restricted.norm(dim=-1, keepdim=True)
    z = restricted * (1 - group / norm.clamp(min=1e-300)).clamp(min=0)
    return objective(z, x[:, None, :], l0, group).min(dim=1).values


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_prox_is_the_exact_minimizer_over_all_supports(n):
    generator = torch.Generator().manual_seed(n)
    x = torch.randn(300, n, dtype=torch.float64, generator=generator) * torch.rand(300, 1, dtype=torch.float64) * 3
    for l0, group in [(0.0, 0.5), (0.3, 0.0), (0.05, 0.2), (0.2, 1.0), (0.01, 2.0)]:
        z = prox_l0_group(x, l0, group)
        best = brute_force(x, l0, group)
        torch.testing.assert_close(objective(z, x, l0, group), best, rtol=0, atol=1e-12)
        assert ((z == 0) | (torch.sign(z) == torch.sign(x))).all()  # entries keep their sign or vanish
    assert torch.equal(prox_l0_group(x, 0.0, 0.0), x)  # no penalty: the identity


def test_prox_special_cases_are_hard_threshold_and_block_soft_threshold():
    x = torch.tensor([[3.0, -0.5, 0.2, 1.0]], dtype=torch.float64)
    # group = 0: keep x_i exactly when x_i²/2 > l0 (hard thresholding at √(2·l0) = 0.6)
    assert torch.equal(prox_l0_group(x, 0.18, 0.0), torch.tensor([[3.0, 0.0, 0.0, 1.0]], dtype=torch.float64))
    # l0 = 0: x·(1 − group/‖x‖)₊
    torch.testing.assert_close(prox_l0_group(x, 0.0, 1.0), x * (1 - 1.0 / x.norm()))
    assert not prox_l0_group(x, 0.0, x.norm().item()).any()


def _zero_channels(group: ChannelGroups, channels: list[int]) -> None:
    """Zero the listed channels of a penalized group (all its parts)."""
    rows = group.rows()
    rows[channels] = 0
    group.write(rows)


@pytest.mark.parametrize("kind", ["out", "in"])
def test_removing_zero_channels_keeps_the_function(mnist5k, kind):
    """A channel whose out group (filters, bias, BN scale and shift) or in group (the weights reading it) is zero
    carries nothing: removing it changes no output, and the layers shrink."""
    torch.manual_seed(0)
    model = BNNet().eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    example = mnist5k.test[0][0].unsqueeze(0)
    with prunable_groups(model, example, HIDDEN) as (graph, groups, _):
        penalized = channel_groups(graph, groups, kind)
    assert sorted(g.rows().shape[0] for g in penalized) == [16, 32, 32, 64]  # every group but the classifier's
    _zero_channels(next(g for g in penalized if g.root is model.features[0]), [1, 5, 7])
    x = torch.stack([mnist5k.test[i][0] for i in range(8)])
    with torch.no_grad():
        before = model(x)
    assert remove_dead_channels(model, graph, penalized) == 3
    assert widths(model) == [13, 32, 32, 64, 10]
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_resnet20_groups_span_the_residual_stream_and_removal_is_exact(make_cfg):
    """On the CIFAR ResNet (option-A shortcuts) the layers feeding a padded shortcut are not penalized; zeroing
    a block's inner channels and removing them keeps the output."""
    torch.manual_seed(0)
    model = build(make_cfg("model=resnet20", "dataset=fake").model).eval()
    example = torch.randn(1, 3, 32, 32)
    with prunable_groups(model, example, HIDDEN) as (graph, groups, _):
        penalized = channel_groups(graph, groups, "out")
    assert len(penalized) == 9  # the first conv of each of the 9 blocks; the residual streams feed zero-padding
    for group in penalized:
        _zero_channels(group, [0, 2])
    with torch.no_grad():
        before = model(example)
    assert remove_dead_channels(model, graph, penalized) == 18
    with torch.no_grad():
        torch.testing.assert_close(model(example), before, rtol=1e-4, atol=1e-5)


def test_a_layer_with_every_channel_zero_is_a_user_error(lenet, lenet_context):
    with prunable_groups(lenet, lenet_context.example, HIDDEN) as (graph, groups, _):
        penalized = channel_groups(graph, groups, "out")
    first = next(g for g in penalized if g.root is lenet.features[0])
    first.write(torch.zeros_like(first.rows()))
    with pytest.raises(UserError, match="every channel of features.0 is zero.*technique.steps.prune.group"):
        remove_dead_channels(lenet, graph, penalized)


@pytest.fixture
def small_context(mnist5k, lenet):
    """Proximal training and fine-tuning on the first 1,280 training images (fast)."""
    data = Data(Subset(mnist5k.train, range(1280)), mnist5k.test, mnist5k.input_shape, mnist5k.num_classes)
    return make_context(data, lenet)


def test_ratio_is_reached_zeros_survive_finetune_and_channels_are_gone(lenet, small_context):
    base = structure(lenet, small_context.example)
    step = L0GroupPrune(l0=1e-4, group=0.1, epochs=2)
    pruned = step.apply(copy.deepcopy(lenet), 0.8, small_context)
    (note,) = small_context.notes
    assert "80.0% of the penalized parameters zero" in note
    assert sum(widths(pruned)[:-1]) < sum(widths(lenet)[:-1]) and widths(pruned)[-1] == 10
    after = structure(pruned, small_context.example)
    assert after["macs"] < base["macs"] and after["nonzero_params"] <= 0.25 * base["params"]
    zeros = [(m.weight == 0).clone() for m in pruned.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    pruned = small_context.finetune(pruned, 1)
    weights = [m.weight for m in pruned.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert all((w[z] == 0).all() for w, z in zip(weights, zeros, strict=True))  # the masks held the zeros
    step.finalize(pruned, small_context)
    x, y = small_context.data.train[0]
    nn.functional.cross_entropy(pruned(x[None]), torch.tensor([y])).backward()
    assert any(w.grad[z].any() for w, z in zip(weights, zeros, strict=True))  # masks gone after finalize


def test_strength_and_groups_knobs(make_cfg):
    step = build(make_cfg("technique=prune_l0gl").technique.steps.prune)
    assert (type(step), step.takes_sweep_ratio, step.kind, step.lr) == (L0GroupPrune, True, "out", 0.01)
    node = make_cfg("technique=prune_l0gl", "technique.steps.prune.strength=fixed",
                    "technique.steps.prune.groups=in").technique.steps.prune
    fixed = build(node)
    assert (fixed.takes_sweep_ratio, fixed.kind) == (False, "in")
    with pytest.raises(UserError, match="groups='filter' is not an option; use one of out, in"):
        L0GroupPrune(groups="filter")
    with pytest.raises(UserError, match="not both 0"):
        L0GroupPrune(l0=0, group=0)


@pytest.mark.slow
def test_l0gl_on_lenet_removes_channels_within_2_points(lenet, lenet_context):
    """MobilePrune at 0.8 on the trained LeNet-5: whole channels removed (measured: MACs × 0.56, params × 0.27),
    accuracy after the proximal training and 2 fine-tune epochs within 2 points of the base (measured: −0.2)."""
    base_acc = evaluate(lenet, lenet_context.data.test)["acc_top1"]
    base = structure(lenet, lenet_context.example)
    step = L0GroupPrune(epochs=3)
    pruned = lenet_context.finetune(step.apply(copy.deepcopy(lenet), 0.8, lenet_context), 2)
    after = structure(step.finalize(pruned, lenet_context), lenet_context.example)
    assert after["macs"] <= 0.7 * base["macs"] and after["params"] <= 0.4 * base["params"]
    assert after["nonzero_params"] <= 0.2 * base["params"]
    assert evaluate(pruned, lenet_context.data.test)["acc_top1"] >= base_acc - 0.02


@pytest.mark.slow
def test_pipeline_prune_l0gl_row(make_cfg):
    row: dict = {}
    cfg = make_cfg("technique=prune_l0gl", "ratio=0.7", "train.epochs=2", "technique.steps.prune.epochs=2",
                   "finetune.epochs=1")
    run_variant(cfg, fast_host(), row)
    assert row["status"] == "ok" and row["ratio"] == 0.7
    # measured: MACs 1.39× fewer, file 1.94× smaller, nonzero parameters 4.0× fewer
    assert row["macs_reduction_x"] > 1.25 and row["compression_x"] > 1.6 and row["nonzero_reduction_x"] > 3
    assert row["acc_delta"] >= -0.03
    assert "70.0% of the penalized parameters zero" in row["notes"] and "channels removed" in row["notes"]
