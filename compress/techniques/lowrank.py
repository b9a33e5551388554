"""Low-rank decomposition steps: CP and Tucker-2 of convolutions, truncated SVD of linear layers.

Each step replaces every eligible layer by a sequence of smaller layers (stride, padding, dilation,
padding mode and bias preserved), with the rank taken from `ratio` so that the layer keeps about
(1 − ratio) of its parameters, or fixed by `rank`. A layer that decomposition would not make smaller
is left alone and named in the notes; every decomposed layer's output on a random batch is compared
with the original's and the relative error noted. NaN or a failing decomposition raises
`DecompositionError`.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import tensorly as tl
import torch
from tensorly.decomposition import parafac, partial_tucker
from torch import nn

from compress.errors import UserError, first_line
from compress.isolate import torch_threads
from compress.techniques.base import Context, Step, forward_calls
from compress.techniques.layers import LayerPolicy
from compress.techniques.vbmf import vbmf_ranks

log = logging.getLogger(__name__)


class DecompositionError(RuntimeError):
    """A decomposition failed or produced non-finite values."""


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextmanager
def _tensorly_torch() -> Iterator[None]:
    """tensorly's pytorch backend for this thread only, one torch thread (the tiny ALS matmuls are
    many times slower when threads contend), and quiet about ranks above a mode's size.

    tensorly's einsum tensor algebra computes the CP-ALS products (MTTKRP) with torch.einsum, which opt_einsum
    orders well; the default forms the Khatri-Rao product of the other modes explicitly: for a 512×512×3×3 conv
    at rank 1145 a matrix of 786,432 × 1,145 per spatial mode, 20× slower per iteration (measured here)."""
    with (
        torch_threads(1),
        tl.backend_context("pytorch", local_threadsafe=True),
        tl.tenalg.backend_context("einsum", local_threadsafe=True),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", UserWarning)
        yield


def _layer_inputs(model: nn.Module, example: torch.Tensor, kind: type) -> dict[str, torch.Size]:
    """The input shape of every `kind` layer when the model runs `example` (its first call)."""
    shapes: dict[str, torch.Size] = {}
    for name, _module, shape in forward_calls(model, example, kind):
        shapes.setdefault(name, shape)
    return shapes


def _relative_error(old: nn.Module, new: nn.Module, shape: torch.Size, seed: int) -> float:
    x = torch.randn(8, *shape[1:], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want, got = old(x), new(x)
    return float(torch.linalg.norm(got - want) / torch.linalg.norm(want).clamp(min=1e-12))


def _conv(src: nn.Conv2d, cin: int, cout: int, kernel, weight: torch.Tensor, axes: str, **kw) -> nn.Conv2d:
    """A conv with `src`'s stride/padding/dilation along `axes` ("hw", "h", "w" or "" for a 1×1)."""

    def along(values: tuple[int, int], other: int) -> tuple[int, int]:
        return (values[0] if "h" in axes else other, values[1] if "w" in axes else other)

    padding = src.padding if isinstance(src.padding, str) and axes else along(src.padding, 0)
    conv = nn.Conv2d(
        cin, cout, kernel, stride=along(src.stride, 1), padding=padding, dilation=along(src.dilation, 1),
        padding_mode=src.padding_mode, **kw,
    )  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
    return conv


def _last_conv(rank: int, src: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    """The closing 1×1 rank → out_channels, carrying the original bias."""
    conv = _conv(src, rank, src.out_channels, 1, weight, "", bias=src.bias is not None)
    if src.bias is not None:
        with torch.no_grad():
            conv.bias.copy_(src.bias)
    return conv


class _Decompose(Step):
    """Shared loop: find eligible layers, pick a rank, decompose, check, replace, take notes."""

    family = ""
    layer_type: type[nn.Module] = nn.Conv2d
    rank_words: tuple[str, ...] = ()  # rank estimators besides null (from ratio) and an int

    def __init__(self, rank: int | str | None = None, ratio: float | None = None, skip: Sequence[str] = (),
                 include_classifier: bool = True):  # fmt: skip
        super().__init__(ratio)
        self.policy = LayerPolicy.of((self.layer_type,), include_classifier, skip)
        valid = rank is None or rank in self.rank_words or (isinstance(rank, int) and rank >= 1)
        if not valid:
            choices = ", ".join(("null (from ratio)", "a positive int", *self.rank_words))
            raise UserError(f"{self.family} rank must be one of: {choices}; got {rank!r}")
        self.rank = rank
        self.uses_ratio = rank is None  # a fixed rank (or vbmf) ignores the sweep's ratio

    def apply(self, model: nn.Module, ratio: float | None, ctx: Context) -> nn.Module:
        shapes = _layer_inputs(model, ctx.example, self.layer_type)
        layers, left = self.policy.choose(model, ctx.example)
        skipped = [f"{name} ({why})" for name, why in left.items()]
        for i, (name, layer) in enumerate(layers.items(), 1):
            rank, reason = self._plan(name, layer, ratio)
            if reason:
                skipped.append(f"{name} ({reason})")
                continue
            log.info("%s layer %d/%d %s at rank %s ...", self.family, i, len(layers), name, rank)
            start = time.perf_counter()
            model.set_submodule(name, self._replacement(name, layer, rank, shapes[name], ctx))
            log.info("%s layer %d/%d %s done in %.1f s", self.family, i, len(layers), name, time.perf_counter() - start)
        if skipped:
            ctx.note(f"{self.family} left alone: {', '.join(skipped)}")
        return model

    def _plan(self, name: str, layer: nn.Module, ratio: float | None) -> tuple[Any, str | None]:
        """(rank, None) for a layer to decompose, (None, why not) for one to leave alone."""
        if not torch.isfinite(layer.weight).all():
            raise DecompositionError(f"{self.family} of {name}: the layer's weights contain NaN or inf")
        reason = self._ineligible(layer)
        if reason:
            return None, reason
        rank = self._rank(layer, ratio)
        if self._params_after(layer, rank) >= n_params(layer):
            return None, f"rank {rank} would not reduce params"
        return rank, None

    def _replacement(self, name: str, layer: nn.Module, rank: Any, shape: torch.Size, ctx: Context) -> nn.Module:
        """The decomposed layer, checked for NaN and against the original on a random batch."""
        what = f"{self.family} of {name} at rank {rank}"
        try:
            new = self._decompose(layer, layer.weight.detach().double(), rank, ctx.seed)
        except Exception as exc:
            raise DecompositionError(f"{what} failed: {first_line(exc) or repr(exc)}") from exc
        error = _relative_error(layer, new, shape, ctx.seed)
        if not all(torch.isfinite(p).all() for p in new.parameters()) or not math.isfinite(error):
            raise DecompositionError(f"{what} produced NaN or inf; try a lower rank or ratio")
        out_ch, in_ch = layer.weight.shape[:2]
        wide = f" (more than its {in_ch} input and {out_ch} output channels)" if rank_exceeds(rank, layer) else ""
        params = f"params {n_params(layer)}→{n_params(new)}"
        ctx.note(f"{self.family} {name}: rank {rank}{wide}, {params}, rel_err {error:.3g}")
        return new

    def _ineligible(self, layer: nn.Module) -> str | None:
        if layer.groups != 1:
            return "grouped"
        if layer.in_channels == 1:
            return "1 input channel"
        return "1×1 kernel" if layer.kernel_size == (1, 1) else None

    def _rank(self, layer: nn.Module, ratio: float | None) -> Any:
        raise NotImplementedError

    def _params_after(self, layer: nn.Module, rank: Any) -> int:
        raise NotImplementedError

    def _decompose(self, layer: nn.Module, weight: torch.Tensor, rank: Any, seed: int) -> nn.Module:
        raise NotImplementedError


def rank_exceeds(rank: Any, layer: nn.Module) -> bool:
    """Whether a single rank is above both channel counts of the layer (the first factor widens the model)."""
    return isinstance(rank, int) and rank > max(layer.weight.shape[:2])


def _bias(layer: nn.Module) -> int:
    return layer.bias.numel() if layer.bias is not None else 0


def _budget(layer: nn.Module, ratio: float) -> float:
    """Weight parameters the decomposed layer may have to keep (1 − ratio) of all its parameters."""
    return (1 - ratio) * n_params(layer) - _bias(layer)


def _balanced(weights: torch.Tensor, factors: list[torch.Tensor]) -> list[torch.Tensor]:
    """CP factors rescaled so that each component's scale is spread evenly over its factors: the
    product is unchanged, but fine-tuning with SGD is far more stable than with unbalanced factors."""
    norms = torch.stack([f.norm(dim=0) for f in factors]).clamp(min=1e-12)
    scale = (weights.abs() * norms.prod(0)) ** (1 / len(factors))
    balanced = [f / n * scale for f, n in zip(factors, norms, strict=True)]
    balanced[0] = balanced[0] * weights.sign()
    return [f.float() for f in balanced]


class CPDecompose(_Decompose):
    """CP (Lebedev et al. 2015): conv → 1×1 (in→R) → k×1 depthwise → 1×k depthwise → 1×1 (R→out)."""

    family = "cp"

    def __init__(
        self, rank: int | None = None, ratio: float | None = None, l2_reg: float = 1e-3, tol: float = 1e-5,
        max_iter: int = 200, skip: Sequence[str] = (), include_classifier: bool = True,
    ):  # fmt: skip
        super().__init__(rank, ratio, skip, include_classifier)
        self.l2_reg = l2_reg  # ridge term of the ALS on the unit-norm weight: limits cancelling components
        self.tol, self.max_iter = tol, max_iter  # ALS stops when the error changes by less than tol, or after max_iter

    def _rank(self, layer: nn.Conv2d, ratio: float | None) -> int:
        if self.rank is not None:
            return int(self.rank)
        kh, kw = layer.kernel_size
        return max(1, int(_budget(layer, ratio) // (layer.in_channels + kh + kw + layer.out_channels)))

    def _params_after(self, layer: nn.Conv2d, rank: int) -> int:
        kh, kw = layer.kernel_size
        return rank * (layer.in_channels + kh + kw + layer.out_channels) + _bias(layer)

    def _decompose(self, layer: nn.Conv2d, weight: torch.Tensor, rank: int, seed: int) -> nn.Module:
        norm = weight.norm().clamp(min=1e-12)
        with _tensorly_torch():
            cp = parafac(
                weight / norm, rank, init="svd", n_iter_max=self.max_iter, tol=self.tol, l2_reg=self.l2_reg,
                random_state=seed,
            )  # fmt: skip
        out_f, in_f, h_f, w_f = _balanced(cp.weights * norm, cp.factors)
        kh, kw = layer.kernel_size
        return nn.Sequential(
            _conv(layer, layer.in_channels, rank, 1, in_f.T, "", bias=False),
            _conv(layer, rank, rank, (kh, 1), h_f.T, "h", groups=rank, bias=False),
            _conv(layer, rank, rank, (1, kw), w_f.T, "w", groups=rank, bias=False),
            _last_conv(rank, layer, out_f),
        )


def _tucker_ranks_for(layer: nn.Conv2d, budget: float) -> tuple[int, int]:
    """(out, in) ranks, both the same fraction s of their channels, largest within `budget`:
    s·I² + s²·I·O·k + s·O² = budget (k = kh·kw), then rounded and trimmed back into the budget."""
    cin, cout, k = layer.in_channels, layer.out_channels, layer.kernel_size[0] * layer.kernel_size[1]
    a, b = cin * cout * k, cin * cin + cout * cout
    s = (-b + math.sqrt(b * b + 4 * a * max(budget, 0.0))) / (2 * a)
    r_out, r_in = min(cout, max(1, round(s * cout))), min(cin, max(1, round(s * cin)))
    while cin * r_in + r_in * r_out * k + r_out * cout > budget and r_in * r_out > 1:
        if r_out / cout >= r_in / cin and r_out > 1 or r_in == 1:
            r_out -= 1
        else:
            r_in -= 1
    return r_out, r_in


class TuckerDecompose(_Decompose):
    """Tucker-2 (Kim et al. 2016) on the channel modes: conv → 1×1 (in→R_in) → k×k core → 1×1 (R_out→out).

    `rank`: None = from ratio, an int for both modes (clipped to the channels), or "vbmf" (EVBMF on
    the mode-0 and mode-1 unfoldings, at least 1)."""

    family = "tucker"
    rank_words = ("vbmf",)

    def _rank(self, layer: nn.Conv2d, ratio: float | None) -> tuple[int, int]:
        if self.rank == "vbmf":
            return vbmf_ranks(layer.weight)
        if self.rank is not None:
            return min(int(self.rank), layer.out_channels), min(int(self.rank), layer.in_channels)
        return _tucker_ranks_for(layer, _budget(layer, ratio))

    def _params_after(self, layer: nn.Conv2d, rank: tuple[int, int]) -> int:
        (r_out, r_in), (kh, kw) = rank, layer.kernel_size
        return layer.in_channels * r_in + r_in * r_out * kh * kw + r_out * layer.out_channels + _bias(layer)

    def _decompose(self, layer: nn.Conv2d, weight: torch.Tensor, rank: tuple[int, int], seed: int) -> nn.Module:
        r_out, r_in = rank
        with _tensorly_torch():
            (core, (out_f, in_f)), _ = partial_tucker(weight, rank=[r_out, r_in], modes=[0, 1], random_state=seed)
        return nn.Sequential(
            _conv(layer, layer.in_channels, r_in, 1, in_f.float().T, "", bias=False),
            _conv(layer, r_in, r_out, layer.kernel_size, core.float(), "hw", bias=False),
            _last_conv(r_out, layer, out_f.float()),
        )


class SVDDecompose(_Decompose):
    """Truncated SVD of each Linear: W ≈ (U√S)(√S Vᵀ) → Linear(in→R, no bias) → Linear(R→out, bias).

    The classifier (the last layer the forward pass runs) is left alone unless `include_classifier`: it is small
    and its rank is bounded by the number of classes, so truncating it costs accuracy for little size."""

    family = "svd"
    layer_type = nn.Linear

    def __init__(self, rank: int | None = None, ratio: float | None = None, include_classifier: bool = False,
                 skip: Sequence[str] = ()):  # fmt: skip
        super().__init__(rank, ratio, skip, include_classifier)

    def _ineligible(self, layer: nn.Linear) -> str | None:
        return None

    def _rank(self, layer: nn.Linear, ratio: float | None) -> int:
        if self.rank is not None:
            return int(self.rank)
        return max(1, int(_budget(layer, ratio) // (layer.in_features + layer.out_features)))

    def _params_after(self, layer: nn.Linear, rank: int) -> int:
        return rank * (layer.in_features + layer.out_features) + _bias(layer)

    def _decompose(self, layer: nn.Linear, weight: torch.Tensor, rank: int, seed: int) -> nn.Module:
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        root = s[:rank].sqrt()
        first, second = nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features)
        with torch.no_grad():
            first.weight.copy_((root[:, None] * vh[:rank]).float())
            second.weight.copy_((u[:, :rank] * root[None, :]).float())
            if layer.bias is None:
                second.bias = None
            else:
                second.bias.copy_(layer.bias)
        return nn.Sequential(first, second)
