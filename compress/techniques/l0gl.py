"""MobilePrune (ℓ0 sparse group lasso): training with the penalty λ₀‖W‖₀ + λ_g Σ_g ‖W_g‖₂ by proximal gradient
steps whose proximal operator is exact, then every all-zero channel removed for real (torch-pruning) and the
remaining zeros kept at zero through fine-tuning.

A group is one channel of a torch-pruning group: with `groups: out` every parameter that writes the channel (the
filters / neurons of the coupled layers, their biases, the BatchNorm scale and shift), with `groups: in` every
weight that reads it. A channel whose group is all zero carries zeros (out) or is read by nobody (in), so removing
it leaves the function as it is. The classifier's outputs, the `skip` layers' outputs and the layers feeding
zero-padded shortcuts are not penalized (they are never removed).

The exact prox of one group x at step size η: keeping the k largest-magnitude entries S costs
½‖x_{S^c}‖² + ηλ_g‖x_S‖ − ½(ηλ_g)² + ηλ₀k when ‖x_S‖ > ηλ_g (the kept entries shrink by 1 − ηλ_g/‖x_S‖), zeroing
the group costs ½‖x‖²; for a given k the top-k entries are best, so one sort and a cumulative sum find the best k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from compress.errors import UserError
from compress.techniques.base import Context, Step, choice
from compress.techniques.groups import prunable_groups, standing_aside
from compress.techniques.layers import LayerPolicy
from compress.techniques.masks import KeptZeros

STRENGTHS = ("ratio", "fixed")
GROUP_KINDS = ("out", "in")
SEARCH_STEPS = 30  # bisection steps of the penalty scale that reaches the scheduled sparsity
SHARING = (nn.Conv1d, nn.Conv2d, nn.Linear)  # layers whose weight is [out, in, ...]


def _sorted_energy(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the order of the entries by decreasing magnitude and ‖x_S‖² of the top-k, k = 1..n."""
    magnitude, order = groups.abs().sort(dim=1, descending=True)
    return order, (magnitude**2).cumsum(dim=1)


def kept_counter(top_energy: torch.Tensor) -> Callable[[float, float], torch.Tensor]:
    """(l0, group) → how many entries the exact prox keeps in each row (0: the row is zeroed), from
    `_sorted_energy`'s ‖x_S‖² of the top-k; `l0` and `group` are ηλ₀ and ηλ_g."""
    norm = top_energy.sqrt()
    total = top_energy[:, -1]
    k = torch.arange(1, top_energy.shape[1] + 1, dtype=top_energy.dtype)
    dropped = 0.5 * (total[:, None] - top_energy)

    def kept(l0: float, group: float) -> torch.Tensor:
        cost = dropped + group * norm - 0.5 * group**2 + l0 * k
        best_cost, best = torch.where(norm > group, cost, torch.inf).min(dim=1)  # ‖x_S‖ ≤ ηλ_g: x_S → 0
        return torch.where(best_cost < 0.5 * total, best + 1, 0)

    return kept


def prox_l0_group(
    groups: torch.Tensor, l0: float, group: float, ordered: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """argmin_z ½‖z − x‖² + l0·‖z‖₀ + group·‖z‖₂ for every row x of `groups` (l0 = ηλ₀, group = ηλ_g);
    `ordered` = `_sorted_energy(groups)` when the caller has it already."""
    order, top_energy = ordered if ordered is not None else _sorted_energy(groups)
    keep = kept_counter(top_energy)(l0, group)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(groups.shape[1]).expand_as(order))
    norm = top_energy.gather(1, (keep - 1).clamp(min=0)[:, None]).sqrt()
    shrink = torch.where(keep[:, None] > 0, 1 - group / norm.clamp(min=torch.finfo(norm.dtype).tiny), 0)
    return torch.where(rank < keep[:, None], groups * shrink, 0)


@dataclass
class Part:
    """The entries of one parameter that belong to the channels of a group: `index[c]` along `dim` for channel c."""

    param: nn.Parameter
    dim: int
    index: torch.Tensor  # [channels, entries per channel along dim]

    def rows(self) -> torch.Tensor:
        picked = self.param.detach().index_select(self.dim, self.index.flatten()).movedim(self.dim, 0)
        return picked.reshape(self.index.shape[0], -1)

    @property
    def width(self) -> int:
        return self.index.shape[1] * (self.param.numel() // self.param.shape[self.dim])

    @torch.no_grad()
    def write(self, rows: torch.Tensor) -> None:
        shape = self.param.movedim(self.dim, 0).shape
        values = rows.reshape(self.index.numel(), *shape[1:]).movedim(0, self.dim)
        self.param.index_copy_(self.dim, self.index.flatten(), values)


class ChannelGroups:
    """One torch-pruning group seen as a matrix: one row per channel, the entries of `parts` (out or in side)."""

    def __init__(self, root: nn.Module, handler: Callable, parts: list[Part]):
        self.root, self.handler, self.parts = root, handler, parts

    def rows(self) -> torch.Tensor:
        return torch.cat([part.rows() for part in self.parts], dim=1)

    def write(self, rows: torch.Tensor) -> None:
        for part, block in zip(self.parts, rows.split([p.width for p in self.parts], dim=1), strict=True):
            part.write(block)

    def dead(self) -> list[int]:
        """Channels whose entries are all zero."""
        return torch.nonzero(self.rows().abs().sum(dim=1) == 0).flatten().tolist()


def _index(root_idxs: list[int], idxs: list[int]) -> torch.Tensor | None:
    """[channels, m] positions of each root channel in a layer; None when channels map to unequal counts."""
    channels = max(root_idxs) + 1
    by_channel: list[list[int]] = [[] for _ in range(channels)]
    for root, local in zip(root_idxs, idxs, strict=True):
        by_channel[root].append(local)
    if len({len(c) for c in by_channel}) != 1:
        return None
    return torch.tensor(by_channel, dtype=torch.long)


def _parts(graph: tp.DependencyGraph, group, kind: str) -> list[Part] | None:
    """The `kind` side of a group as Parts; None when it holds a layer type the penalty does not cover."""
    parts: list[Part] = []
    for item in group.items:
        module, handler = item.dep.target.module, item.dep.handler
        if isinstance(module, nn.Parameter):
            return None
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        index = _index(item.root_idxs, item.idxs)
        grouped = getattr(module, "groups", 1) > 1 and isinstance(module, SHARING)
        depthwise = grouped and module.groups == module.in_channels == module.out_channels
        if index is None or (grouped and not depthwise):
            return None
        writes = depthwise or isinstance(module, nn.modules.batchnorm._BatchNorm) or (
            graph.is_out_channel_pruning_fn(handler) and isinstance(module, SHARING)
        )
        reads = not writes and isinstance(module, SHARING)
        if not (writes or reads):
            return None
        if kind == "out" and writes:
            parts += [Part(p, 0, index) for p in params]
        elif kind == "in" and reads:
            parts.append(Part(module.weight, 1, index))
    return parts or None


def channel_groups(graph: tp.DependencyGraph, groups: list, kind: str) -> list[ChannelGroups]:
    """The penalized groups: every prunable torch-pruning group whose `kind` side the penalty covers."""
    found = []
    for group in groups:
        parts = _parts(graph, group, kind)
        if parts is not None:
            root = group.items[0].dep
            found.append(ChannelGroups(root.target.module, root.handler, parts))
    return found


def remove_dead_channels(model: nn.Module, graph: tp.DependencyGraph, penalized: list[ChannelGroups]) -> int:
    """Remove (torch-pruning, through `graph`: the model's structure has not changed since it was traced) every
    channel whose penalized group is all zero; the number removed. A layer whose channels are all zero would cut
    the network: a one-line error says what to lower."""
    removed = 0
    names = {m: name for name, m in model.named_modules()}
    with standing_aside(model):
        for channels in penalized:
            dead = channels.dead()
            if len(dead) == channels.parts[0].index.shape[0]:
                raise UserError(
                    f"every channel of {names[channels.root]} is zero after the proximal training; lower the ratio "
                    "or technique.steps.prune.group"
                )
            if dead:
                graph.get_pruning_group(channels.root, channels.handler, dead).prune()
                removed += len(dead)
    return removed


def _sparsity_schedule(ratio: float, steps: int) -> Callable[[int], float]:
    """Zhu & Gupta (2017): the zero fraction at step t rises as ratio·(1 − (1 − t/T)³) over the first half."""
    ramp = max(steps // 2, 1)
    return lambda t: ratio * (1 - (1 - min(t / ramp, 1.0)) ** 3)


class Proximal:
    """The proximal step applied after every optimizer step: each group's rows through the exact prox at
    step size η = the optimizer's learning rate, but for the strongest channel of each group.

    With `target` (strength: ratio) λ₀ and λ_g are scaled together by the smallest factor (bisection) at which
    at least the scheduled fraction of all penalized entries is zero; otherwise they are used as given."""

    def __init__(self, groups: list[ChannelGroups], l0: float, group: float, target: Callable[[int], float] | None):
        self.groups, self.l0, self.group, self.target, self.steps = groups, l0, group, target, 0

    def __call__(self, lr: float) -> None:
        self.steps += 1
        if lr <= 0:  # a step of size 0 moved nothing
            return
        rows = [g.rows() for g in self.groups]
        ordered = [_sorted_energy(x) for x in rows]  # one sort per group and step, for the search and the prox
        scale = 1.0 if self.target is None else self._scale_reaching(rows, ordered, self.target(self.steps), lr)
        for channels, x, sort in zip(self.groups, rows, ordered, strict=True):
            proxed = prox_l0_group(x, scale * lr * self.l0, scale * lr * self.group, sort)
            strongest = x.norm(dim=1).argmax()  # every layer keeps one channel, as channel pruning does:
            proxed[strongest] = x[strongest]  # a layer whose channels all went to zero would cut the network
            channels.write(proxed)

    def _scale_reaching(
        self, rows: list[torch.Tensor], ordered: list[tuple[torch.Tensor, torch.Tensor]], sparsity: float, lr: float
    ) -> float:
        counters = [kept_counter(top_energy) for _, top_energy in ordered]
        entries = sum(x.numel() for x in rows)

        def reached(scale: float) -> bool:
            kept = sum(int(count(scale * lr * self.l0, scale * lr * self.group).sum()) for count in counters)
            return entries - kept >= sparsity * entries

        largest = max(float(x.norm(dim=1).max()) for x in rows)
        # a scale at which one penalty alone zeroes every group: ηλ₀·s ≥ ½‖x‖² or ηλ_g·s ≥ ‖x‖
        bounds = [0.5 * largest**2 / (lr * self.l0)] if self.l0 else []
        low, high = 0.0, min(bounds + ([largest / (lr * self.group)] if self.group else []))
        if reached(low):
            return low
        for _ in range(SEARCH_STEPS):
            middle = (low + high) / 2
            low, high = (low, middle) if reached(middle) else (middle, high)
        return high


def _zero_fraction(groups: list[ChannelGroups]) -> float:
    rows = [g.rows() for g in groups]
    return sum(int((x == 0).sum()) for x in rows) / max(sum(x.numel() for x in rows), 1)


class L0GroupPrune(Step):
    """MobilePrune: `epochs` of proximal-gradient training at learning rate `lr` with λ₀ = `l0`, λ_g = `group`,
    then the all-zero channels removed and the other zeros kept through fine-tuning (until `finalize`).

    `strength: ratio` reaches the sweep's `ratio` (the zero fraction of the penalized parameters) by scaling λ₀
    and λ_g together at every step; `strength: fixed` uses them as given and the sweep's ratio does not apply."""

    def __init__(
        self,
        ratio: float | None = None,
        l0: float = 1e-4,
        group: float = 0.1,
        groups: str = "out",
        epochs: int = 5,
        lr: float = 0.01,
        strength: str = "ratio",
        skip: Sequence[str] = (),
    ):
        super().__init__(ratio)
        self.policy = LayerPolicy.of(classifier=False, skip=skip)
        self.kind = choice("groups", groups, GROUP_KINDS)
        self.uses_ratio = choice("strength", strength, STRENGTHS) == "ratio"
        if min(l0, group) < 0 or l0 + group == 0 or epochs < 1:
            raise UserError(f"l0 and group must be ≥ 0, not both 0, and epochs ≥ 1; got {l0}, {group}, {epochs}")
        self.l0, self.group, self.epochs, self.lr = l0, group, epochs, lr
        self._zeros = KeptZeros()

    def apply(self, model: nn.Module, ratio: float | None, ctx: Context) -> nn.Module:
        with prunable_groups(model, ctx.example, self.policy) as (graph, groups, _):  # the one trace: training
            penalized = channel_groups(graph, groups, self.kind)  # changes weights, not the structure
        if not penalized:
            raise UserError(f"{type(model).__name__} has no channel group the ℓ0 group penalty can act on")
        steps = self.epochs * -(-len(ctx.data.train) // ctx.batch_size)
        target = _sparsity_schedule(ratio, steps) if self.uses_ratio else None
        proximal = Proximal(penalized, self.l0, self.group, target)
        model = ctx.finetune(model, self.epochs, lr=self.lr, label="proximal training", after_step=proximal)
        sparsity = _zero_fraction(penalized)
        removed = remove_dead_channels(model, graph, penalized)
        for param in model.parameters():
            if not param.all():  # the zeros the proximal training left in the channels that stay
                self._zeros.keep(param)
        zeros = f"{sparsity:.1%} of the penalized parameters zero"
        ctx.note(f"l0gl ({self.kind} groups): {zeros}, {removed} channels removed")
        return model

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        self._zeros.release()
        return model
