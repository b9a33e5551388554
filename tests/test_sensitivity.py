"""Sensitivity analysis: the curves (measured, cached, written), the per-layer allocation, `scope: sensitivity`
for channel and magnitude pruning, and the `python cli.py sensitivity` command."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from conftest import cli, fast_host
from torch import nn

from compress import pipeline
from compress.allocation import allocate
from compress.commands.sensitivity import command
from compress.errors import UserError
from compress.techniques import sensitivity
from compress.techniques.prune import ChannelPrune, MagnitudePrune
from compress.techniques.sensitivity import RATIOS
from compress.train import evaluate


def curves_of(**drops: tuple[int, list[float]]) -> pd.DataFrame:
    """A curves table from (size, accuracy drop at 0.1 … 0.9) per layer, base accuracy 0.9."""
    rows = []
    for layer, (size, drop) in drops.items():
        for ratio, d in zip((0.0, *RATIOS), (0.0, *drop), strict=True):
            rows.append({"layer": layer, "size": size, "ratio": ratio, "acc_top1": 0.9 - d})
    return pd.DataFrame(rows)


def test_allocation_prunes_the_layers_that_do_not_lose_accuracy():
    table = curves_of(
        robust=(100, [0, 0, 0, 0, 0, 0, 0, 0, 0.05]),
        fragile=(100, [0.1 * i for i in range(1, 10)]),
    )
    ratios = allocate(table, 0.4)
    assert ratios == {"robust": 0.8, "fragile": 0.0}
    ratios = allocate(table, 0.5)  # robust's last piece (0.05 per 10 units) is cheaper than fragile's first (0.1)
    assert ratios == {"robust": 0.9, "fragile": 0.1}


def test_allocation_removes_exactly_the_ratio_spreads_free_pruning_and_refuses_the_unreachable():
    table = curves_of(a=(60, [0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8]), b=(20, [0, 0, 0, 0, 0, 0.3, 0.5, 0.7, 0.9]))
    assert allocate(table, 0.2) == {"a": 0.2, "b": 0.2}  # free in both: spread, not all taken from one layer
    for target in (0.3, 0.55, 0.8):
        ratios = allocate(table, target)
        assert 60 * ratios["a"] + 20 * ratios["b"] == pytest.approx(target * 80, abs=0.01)
    with pytest.raises(UserError, match="reaches at most ratio 0.90"):
        allocate(table, 0.95)
    with pytest.raises(UserError, match="reaches at most ratio 0.50"):
        allocate(table, 0.6, max_ratio=0.5)


def test_magnitude_sensitivity_reaches_the_sparsity_with_uneven_layers(lenet, lenet_context):
    pruned = MagnitudePrune(scope="sensitivity").apply(copy.deepcopy(lenet), 0.8, lenet_context)
    weights = [m.weight for m in pruned.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    zero = [float((w == 0).float().mean()) for w in weights]
    total = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert total == pytest.approx(0.8, abs=1e-3)
    assert zero[0] < 0.5 < zero[2]  # the 150 weights of the first conv matter more than fc1's 48,000
    assert "sensitivity ratios: features.0" in lenet_context.notes[0]


@pytest.mark.slow
def test_sensitivity_allocated_channel_pruning_is_at_least_as_accurate_as_uniform(lenet, lenet_context):
    """At 0.7 on LeNet-5 / MNIST-5k, both fine-tuned one epoch (measured: 0.948 against 0.771)."""
    accuracy, channels = {}, {}
    for scope in ("uniform", "sensitivity"):
        pruned = ChannelPrune(scope=scope).apply(copy.deepcopy(lenet), 0.7, lenet_context)
        pruned = lenet_context.finetune(pruned, 1)
        accuracy[scope] = evaluate(pruned, lenet_context.data.test)["acc_top1"]
        channels[scope] = sum(m.weight.shape[0] for m in pruned.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    assert abs(channels["sensitivity"] - channels["uniform"]) <= 1  # the same number of channels removed
    assert accuracy["sensitivity"] >= accuracy["uniform"]


@pytest.mark.slow
def test_command_writes_curves_and_a_rerun_or_a_variant_computes_nothing(make_cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = [f"cache_dir={tmp_path / 'cache'}", "train.epochs=2"]
    assert command(overrides) == 0
    folder = tmp_path / "outputs" / "sensitivity" / "lenet5-mnist5k-prune_channel"
    table = pd.read_csv(folder / "sensitivity.csv")
    assert list(table.columns) == ["layer", "size", "ratio", "acc_top1", "acc_drop"]
    assert list(table["layer"].unique()) == ["features.0", "features.3", "classifier.1", "classifier.3"]
    assert (folder / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for _, rows in table.groupby("layer"):  # monotone-ish: accuracy falls with the ratio, bumps stay small
        acc = rows.sort_values("ratio")["acc_top1"].to_numpy()
        assert acc[-1] == acc.min() < acc[0] - 0.1 and (acc[1:] - acc[:-1]).max() <= 0.05
    printed = capsys.readouterr().out
    assert "classifier.1" in printed and "wrote outputs/sensitivity/lenet5-mnist5k-prune_channel" in printed

    def computing(*args, **kwargs):
        raise AssertionError("the re-run computed something")

    monkeypatch.setattr(sensitivity, "measure", computing)
    monkeypatch.setattr(pipeline, "fit", computing)  # base training would raise in its child
    assert command(overrides) == 0
    assert pd.read_csv(folder / "sensitivity.csv").equals(table)

    # a variant with scope=sensitivity and the same cache reads the same curves
    row: dict = {}
    cfg = make_cfg(*overrides, "technique=prune_channel", "technique.steps.prune.scope=sensitivity", "ratio=0.7")
    pipeline.run_variant(cfg, fast_host(), row)
    assert row["status"] == "ok" and "sensitivity ratios: features.0" in row["notes"]


def test_command_refuses_techniques_without_a_pruning_step_and_sweeps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="technique quant_static has no pruning step to analyse"):
        command(["technique=quant_static"])
    with pytest.raises(UserError, match="sensitivity takes one model, dataset and technique"):
        command(["model=lenet5,mlp"])


@pytest.mark.slow
def test_cli_sensitivity_errors_are_one_line():
    proc = cli("sensitivity", "technique=cluster", timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: technique cluster has no pruning step to analyse; use technique=prune_channel or prune_magnitude"
    )


def test_curves_without_a_cache_are_measured_each_time(lenet, lenet_context, monkeypatch):
    calls = []
    real = sensitivity.measure
    monkeypatch.setattr(sensitivity, "measure", lambda *a: calls.append(1) or real(*a))
    step = MagnitudePrune(layers=["conv"])
    first = sensitivity.curves(step, lenet, lenet_context)
    assert len(first) == 2 * (1 + len(RATIOS)) and len(calls) == 1
    assert torch.equal(lenet.features[0].weight, lenet_context.base.features[0].weight)  # trials on copies
    sensitivity.curves(step, lenet, lenet_context)
    assert len(calls) == 2
