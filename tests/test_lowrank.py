"""CP, Tucker-2 (ratio or VBMF rank) and SVD decomposition steps: size, numerical check, recovery, failures."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from conftest import make_context
from tensorly.cp_tensor import CPTensor
from torch import nn
from torch.utils.data import Subset

from compress.config import build
from compress.errors import UserError
from compress.techniques import lowrank
from compress.techniques.lowrank import CPDecompose, DecompositionError, SVDDecompose, TuckerDecompose, n_params
from compress.techniques.vbmf import evbmf_rank, vbmf_ranks
from compress.train import Recipe, evaluate, fit

REL_ERR = re.compile(r"(\S+) (\S+): rank .*, params (\d+)→(\d+), rel_err (\S+)")


def decomposed(notes: list[str]) -> dict[str, tuple[int, int, float]]:
    """layer name → (params before, params after, relative error), parsed from the notes."""
    found = (REL_ERR.fullmatch(n) for n in notes)
    return {m[2]: (int(m[3]), int(m[4]), float(m[5])) for m in found if m}


@pytest.mark.parametrize("step", [CPDecompose(), TuckerDecompose()], ids=["cp", "tucker"])
def test_conv_decomposition_halves_params_notes_error_and_recovers(step, lenet, mnist5k, lenet_context):
    base_acc = evaluate(lenet, mnist5k.test)["acc_top1"]
    convs = {n: n_params(m) for n, m in lenet.named_modules() if isinstance(m, nn.Conv2d)}
    model = step.apply(lenet, 0.5, lenet_context)
    layers = decomposed(lenet_context.notes)
    assert set(layers) == {"features.3"}  # features.0 has one input channel
    assert any("left alone: features.0 (1 input channel)" in n for n in lenet_context.notes)
    for name, (before, after, error) in layers.items():
        assert before == convs[name] and n_params(model.get_submodule(name)) == after <= 0.55 * before
        assert 0 < error < 1
    model = fit(model, Subset(mnist5k.train, range(1500)), Recipe(epochs=1, lr=0.01), seed=0)  # a short fine-tune
    assert evaluate(model, mnist5k.test)["acc_top1"] >= base_acc - 0.03


def exact_low_rank_conv(kind: str, **conv_kwargs) -> nn.Conv2d:
    """A 6→8 conv (3×5 kernel) whose weight is exactly a rank-2 CP or (2, 2) Tucker-2 tensor."""
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(6, 8, (3, 5), **conv_kwargs)
    if kind == "cp":
        a, b, c, d = (torch.randn(n, 2, generator=g) for n in (8, 6, 3, 5))
        weight = torch.einsum("or,ir,hr,wr->oihw", a, b, c, d)
    else:
        core, u_out, u_in = torch.randn(2, 2, 3, 5, generator=g), torch.randn(8, 2, generator=g), torch.randn(6, 2)
        weight = torch.einsum("abhw,oa,ib->oihw", core, u_out, u_in)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


@pytest.mark.parametrize("kind", ["cp", "tucker"])
@pytest.mark.parametrize(
    "conv_kwargs",
    [
        {"stride": (2, 1), "padding": (1, 3), "dilation": (1, 2), "bias": True},
        {"padding": "same", "padding_mode": "reflect", "bias": False},
    ],
    ids=["strided-dilated-bias", "same-reflect"],
)
def test_exact_low_rank_conv_is_reproduced_with_its_geometry(kind, conv_kwargs, mnist5k, lenet):
    conv = exact_low_rank_conv(kind, **conv_kwargs)
    model = nn.Sequential(conv)
    x = torch.randn(2, 6, 13, 17)
    want = conv(x)
    ctx = dataclasses.replace(make_context(mnist5k, lenet), example=x[:1])
    step = CPDecompose(rank=2, l2_reg=0.0) if kind == "cp" else TuckerDecompose(rank=2)
    out = step.apply(model, None, ctx)
    assert isinstance(out[0], nn.Sequential)
    assert torch.allclose(out(x), want, atol=1e-3, rtol=1e-3)
    assert decomposed(ctx.notes)["0"][2] < 1e-3


def test_layers_that_cannot_shrink_are_left_alone_and_listed(mnist5k, lenet):
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 2, 3, bias=False)
    )
    ctx = dataclasses.replace(make_context(mnist5k, lenet), example=torch.randn(1, 4, 16, 16))
    CPDecompose(rank=30).apply(model, None, ctx)
    assert all(isinstance(m, nn.Conv2d) for m in model)
    (line,) = ctx.notes
    assert "0 (grouped)" in line and "1 (1×1 kernel)" in line
    assert "2 (rank 30 would not reduce params)" in line and "3 (rank 30 would not reduce params)" in line


def test_vbmf_ranks_are_within_bounds_and_deterministic(lenet):
    for conv in (m for m in lenet.modules() if isinstance(m, nn.Conv2d)):
        r_out, r_in = vbmf_ranks(conv.weight)
        assert 1 <= r_out <= conv.out_channels and 1 <= r_in <= conv.in_channels
        assert vbmf_ranks(conv.weight.clone()) == (r_out, r_in)


@pytest.mark.parametrize("true_rank", [1, 5, 12])
def test_vbmf_finds_the_rank_of_a_noisy_low_rank_matrix(true_rank):
    g = torch.Generator().manual_seed(true_rank)
    signal = torch.randn(40, true_rank, generator=g) @ torch.randn(true_rank, 70, generator=g)
    noisy = signal / true_rank**0.5 + 0.05 * torch.randn(40, 70, generator=g)
    assert evbmf_rank(noisy) == evbmf_rank(noisy.T) == true_rank
    assert evbmf_rank(0.05 * torch.randn(40, 70, generator=g)) == 0


def test_tucker_vbmf_from_yaml_ignores_the_ratio_and_notes_its_ranks(make_cfg, lenet, lenet_context):
    steps = make_cfg("technique=tucker", "technique.steps.decompose.rank=vbmf").technique.steps
    (step,) = [build(s) for s in steps.values()]
    assert step.rank == "vbmf" and not step.takes_sweep_ratio
    assert [build(s).takes_sweep_ratio for s in make_cfg("technique=cp").technique.steps.values()] == [True]
    step.apply(lenet, None, lenet_context)
    r_out, r_in = vbmf_ranks(lenet_context.base.features[3].weight)
    assert any(n.startswith(f"tucker features.3: rank ({r_out}, {r_in})") for n in lenet_context.notes)
    with pytest.raises(UserError, match="tucker rank must be one of: .*vbmf; got 'auto'"):
        TuckerDecompose(rank="auto")
    with pytest.raises(UserError, match="cp rank must be one of: null .*, a positive int; got 'vbmf'"):
        build(make_cfg("technique=cp", "technique.steps.decompose.rank=vbmf").technique.steps.decompose)


@pytest.mark.parametrize("include_classifier", [False, True])
def test_svd_halves_the_linear_params(include_classifier, lenet, lenet_context):
    linears = {n: n_params(m) for n, m in lenet.named_modules() if isinstance(m, nn.Linear)}
    model = SVDDecompose(include_classifier=include_classifier).apply(lenet, 0.5, lenet_context)
    layers = decomposed(lenet_context.notes)
    expected = set(linears) if include_classifier else set(linears) - {"classifier.5"}
    assert set(layers) == expected
    before, after = sum(linears[n] for n in expected), sum(n_params(model.get_submodule(n)) for n in expected)
    assert 0.45 * before <= after <= 0.5 * before
    assert include_classifier or any("classifier.5 (classifier)" in n for n in lenet_context.notes)


def test_nan_factors_raise_a_clear_error(monkeypatch, lenet, lenet_context):
    def nan_parafac(tensor: torch.Tensor, rank: int, **_) -> CPTensor:
        factors = [torch.full((n, rank), float("nan"), dtype=tensor.dtype) for n in tensor.shape]
        return CPTensor((torch.ones(rank, dtype=tensor.dtype), factors))

    monkeypatch.setattr(lowrank, "parafac", nan_parafac)
    with pytest.raises(DecompositionError, match=r"^cp of features.3 at rank 37 produced NaN or inf"):
        CPDecompose().apply(lenet, 0.5, lenet_context)


def test_nan_weights_and_failing_decompositions_raise_clear_errors(monkeypatch, lenet, lenet_context):
    def broken(*_args, **_kwargs):
        raise RuntimeError("linalg.svd: the algorithm failed to converge\nmore detail")

    monkeypatch.setattr(lowrank, "partial_tucker", broken)
    with pytest.raises(DecompositionError, match=r"^tucker of features.3 at rank .* failed: linalg.svd: .*converge$"):
        TuckerDecompose().apply(lenet, 0.5, lenet_context)
    with torch.no_grad():
        lenet.features[3].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(DecompositionError, match="features.3: the layer's weights contain NaN"):
        TuckerDecompose(rank="vbmf").apply(lenet, None, lenet_context)
