"""Pruning: unstructured magnitude pruning (torch.nn.utils.prune), which zeroes weights and keeps dense
tensors, and structured channel pruning (torch-pruning), which removes channels and shrinks the model.

Both prune to the target ratio in `iterations` equal increments, fine-tuning `ctx.between_epochs`
between increments when `retrain_increments` (the classic prune → retrain loop); the final ratio is the one-shot
ratio. With `scope: sensitivity` each layer gets the ratio its sensitivity curve allows (techniques/sensitivity.py
measures the curves, compress/allocation.py allocates the ratios).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from compress.allocation import allocate, allocation_note
from compress.data import make_loader
from compress.errors import UserError, cannot
from compress.isolate import is_out_of_memory
from compress.techniques.base import Context, Step, choice
from compress.techniques.groups import prunable_groups, standing_aside
from compress.techniques.layers import LayerPolicy, left_alone_note
from compress.techniques.masks import KeptZeros
from compress.techniques.sensitivity import curves

IMPORTANCES = {
    # Li et al. 2017: norm of each filter of the layer whose output channels are removed
    "l1": lambda: tp.importance.MagnitudeImportance(p=1, group_reduction="first"),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2, group_reduction="first"),
    # Molchanov et al. 2019: |weight · gradient| of the task loss, summed over the coupled group
    "taylor": lambda: tp.importance.TaylorImportance(),
    # Liu et al. 2017 (network slimming): |BatchNorm scale|
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    # Fang et al. 2023 (DepGraph): L2 norm over every layer coupled to the channel
    "group_norm": lambda: tp.importance.MagnitudeImportance(p=2, group_reduction="mean"),
}


def _iterations(value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise UserError(f"iterations must be a whole number ≥ 1 (prune in that many increments), got {value!r}")
    return value


def _schedule(model: nn.Module, ctx: Context, iterations: int, retrain: bool):
    """Yield (index, model) once per increment, fine-tuning between increments when `retrain`."""
    for i in range(iterations):
        if i and retrain:
            model = ctx.finetune(model, ctx.between_epochs)
        yield i, model.eval()


def _zero_smallest(layer: nn.Module, sparsity: float) -> None:
    prune.l1_unstructured(layer, "weight", amount=round(sparsity * layer.weight.numel()))
    prune.remove(layer, "weight")


def _zero_smallest_globally(layers: list[nn.Module], sparsity: float) -> None:
    total = sum(m.weight.numel() for m in layers)
    prune.global_unstructured([(m, "weight") for m in layers], prune.L1Unstructured, amount=round(sparsity * total))
    for m in layers:
        prune.remove(m, "weight")


class MagnitudePrune(Step):
    """Zero the `ratio` fraction of smallest-|w| weights of every chosen layer (`scope: layer`), of all of them
    together (`scope: global`), or of each layer at the sparsity its sensitivity curve allows (`scope:
    sensitivity`), made permanent with `prune.remove`; the layers are those of `layers` kinds the layer policy
    (compress/techniques/layers.py) chooses.

    The zeros stay zero through fine-tuning: the gradients of pruned weights are masked until `finalize`.
    """

    def __init__(
        self,
        ratio: float | None = None,
        scope: str = "layer",
        layers: Sequence[str] = ("conv", "linear"),
        include_classifier: bool = True,
        skip: Sequence[str] = (),
        iterations: int = 1,
        retrain_increments: bool = True,
    ):
        super().__init__(ratio)
        self.scope = choice("scope", scope, ("layer", "global", "sensitivity"))
        self.layers = list(layers)
        self.policy = LayerPolicy.of(layers, include_classifier, skip)
        self.iterations = _iterations(iterations)
        self.retrain_increments = retrain_increments
        self._zeros = KeptZeros()

    def pruned_layers(self, model: nn.Module, ctx: Context) -> dict[str, nn.Module]:
        return self.policy.choose(model, ctx.example)[0]

    def apply(self, model: nn.Module, ratio: float, ctx: Context) -> nn.Module:
        chosen, left = self.policy.choose(model, ctx.example)
        if not chosen:
            raise UserError(
                f"magnitude pruning of {' and '.join(self.layers)} layers does not apply: {type(model).__name__} has "
                "none the layer policy chooses; choose the step's layers (conv, linear), skip or include_classifier"
            )
        sparsities = self.layer_sparsities(model, ratio, ctx)
        for i, pruned in _schedule(model, ctx, self.iterations, self.retrain_increments):
            share, layers = (i + 1) / self.iterations, self.pruned_layers(pruned, ctx)
            if sparsities is None:
                _zero_smallest_globally(list(layers.values()), ratio * share)
            for name, sparsity in (sparsities or {}).items():
                _zero_smallest(layers[name], sparsity * share)
            for m in layers.values():
                self._zeros.keep(m.weight)
        weights = [m.weight for m in self.pruned_layers(pruned, ctx).values()]
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        ctx.note(f"magnitude pruning: {zeros:.1%} of the weights of {len(weights)} layers are zero (dense storage)")
        if note := left_alone_note("magnitude pruning", left):
            ctx.note(note)
        return pruned

    def layer_sparsities(self, model: nn.Module, ratio: float, ctx: Context) -> dict[str, float] | None:
        """Each pruned layer's sparsity by name (None: one threshold across all of them)."""
        if self.scope == "global":
            return None
        if self.scope == "layer":
            return dict.fromkeys(self.pruned_layers(model, ctx), ratio)
        sparsities = allocate(curves(self, model, ctx), ratio)
        ctx.note(allocation_note(sparsities))
        return sparsities

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        self._zeros.release()
        return model

    # --- what the sensitivity analysis (compress/techniques/sensitivity.py) asks of a pruning step ---

    def sensitivity_method(self) -> dict:
        return {"step": "magnitude", **self.policy.describe()}

    def sensitivity_layers(self, model: nn.Module, ctx: Context) -> dict[str, int]:
        """The layers pruned one at a time, by name, with the number of weights each has."""
        return {name: m.weight.numel() for name, m in self.pruned_layers(model, ctx).items()}

    def prune_alone(self, model: nn.Module, layer: str, ratio: float, ctx: Context) -> nn.Module:
        _zero_smallest(model.get_submodule(layer), ratio)
        return model


def accumulate_gradients(model: nn.Module, ctx: Context, batches: int) -> None:
    """Gradients of the task loss over the first `batches` training batches (for Taylor importance)."""
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(make_loader(ctx.data.train, ctx.batch_size, shuffle=True, seed=ctx.seed)):
        if i >= batches:
            break
        F.cross_entropy(model(x), y).backward()


@dataclass(frozen=True)
class Layout:
    """What one dependency-graph trace says of a model's structure, by layer name: the root layer of every prunable
    group with its channels (in the model's order), and the layers whose output channels stay (the layer policy's
    left-alone layers, the classifier among them, and those feeding zero-padded shortcuts)."""

    widths: dict[str, int]
    ignored: tuple[str, ...]
    padded: int  # how many of `ignored` feed zero-padded shortcuts


class ChannelPrune(Step):
    """Remove the `ratio` fraction of the channels of every prunable group (`scope: uniform`), of all channels
    ranked together (`scope: global`) or of each group at the ratio its sensitivity curve allows (`scope:
    sensitivity`) with torch-pruning; the classifier's outputs and the `skip` layers' outputs are kept.

    The model's layout (one dependency-graph trace) is found once per structure and reused by layer name: by the
    sensitivity trials (each then costs only torch-pruning's own trace) and by the increments."""

    def __init__(
        self,
        ratio: float | None = None,
        importance: str = "l1",
        scope: str = "uniform",
        iterations: int = 1,
        retrain_increments: bool = True,
        taylor_batches: int = 8,
        max_layer_ratio: float = 0.9,
        round_to: int | None = None,
        skip: Sequence[str] = (),
    ):
        super().__init__(ratio)
        if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
            raise UserError(f"round_to={round_to!r} must be a positive integer (channels per layer a multiple of it) "
                            "or null")  # fmt: skip
        self.round_to = round_to
        self.importance = choice("importance", importance, tuple(IMPORTANCES))
        self.scope = choice("scope", scope, ("uniform", "global", "sensitivity"))
        self.iterations = _iterations(iterations)
        self.retrain_increments = retrain_increments
        self.taylor_batches = taylor_batches
        self.max_layer_ratio = max_layer_ratio
        self.policy = LayerPolicy.of(classifier=False, skip=skip)
        self._layouts: dict[tuple, Layout] = {}

    def check_model(self, model: nn.Module) -> None:
        if self.importance == "bn_scale" and not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise UserError(
                f"importance bn_scale needs BatchNorm layers and {type(model).__name__} has none; "
                "use technique.steps.prune.importance=l1 (or l2, taylor, group_norm)"
            )

    def make_importance(self) -> tp.importance.Importance:
        return IMPORTANCES[self.importance]()

    def apply(self, model: nn.Module, ratio: float, ctx: Context) -> nn.Module:
        self.check_model(model)
        channels, layout = _channels(model), self.layout(model, ctx)
        pruned = self._prune(model, ratio, self.layer_ratios(model, ratio, ctx), self.iterations, ctx)
        ctx.note(f"channel pruning ({self.importance}, {self.scope}): {channels} → {_channels(pruned)} channels")
        if layout.padded:
            ctx.note(f"{layout.padded} layers feeding zero-padded (option-A) shortcuts keep their output channels")
        return pruned

    def layer_ratios(self, model: nn.Module, ratio: float, ctx: Context) -> dict[str, float] | None:
        """Each prunable group's ratio by the name of its root layer (None: all channels ranked together)."""
        if self.scope == "global":
            return None
        widths = self.layout(model, ctx).widths
        ratios = dict.fromkeys(widths, ratio)
        if self.scope == "sensitivity":
            ratios = allocate(curves(self, model, ctx), ratio, self.max_layer_ratio)
            ctx.note(allocation_note(ratios))
        return {name: _keeping_one(widths[name], r) for name, r in ratios.items()}

    def _prune(self, model: nn.Module, ratio: float, layer_ratios: dict[str, float] | None, iterations: int,
               ctx: Context) -> nn.Module:  # fmt: skip
        """Prune with torch-pruning (its MetaPruner traces its own dependency graph, once for all increments)."""
        ignored = [model.get_submodule(name) for name in self.layout(model, ctx).ignored]
        per_layer = None if layer_ratios is None else {model.get_submodule(n): r for n, r in layer_ratios.items()}
        with standing_aside(model):
            pruner = tp.pruner.MetaPruner(  # per-layer ratios are final; a global ranking is capped per layer
                model, ctx.example, importance=self.make_importance(), pruning_ratio=ratio if per_layer is None else 0,
                pruning_ratio_dict=per_layer, global_pruning=per_layer is None,
                max_pruning_ratio=max(ratio, self.max_layer_ratio) if per_layer is None else 1.0,
                iterative_steps=iterations, ignored_layers=ignored, round_to=self.round_to,
            )  # fmt: skip
        for _, pruned in _schedule(model, ctx, iterations, self.retrain_increments):
            if self.importance == "taylor":
                accumulate_gradients(pruned, ctx, self.taylor_batches)
            try:
                with standing_aside(pruned):
                    pruner.step()
            except (RuntimeError, IndexError) as exc:  # a structure its dependency graph got wrong
                if is_out_of_memory(exc):
                    raise
                raise _unfollowed(model, exc) from exc
            pruned.zero_grad(set_to_none=True)
        _check_runs(pruned, ctx.example)
        return pruned

    def layout(self, model: nn.Module, ctx: Context) -> Layout:
        """The model's Layout: one dependency-graph trace per structure (the names and shapes of its parameters)."""
        structure = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
        if structure not in self._layouts:
            names = {m: name for name, m in model.named_modules()}
            with prunable_groups(model, ctx.example, self.policy) as (_, groups, padded):
                roots = {group.items[0].dep.target.module: len(group.items[0].idxs) for group in groups}
            ignored = [*self.policy.left_alone(model, ctx.example), *padded]
            widths = {name: roots[m] for name, m in model.named_modules() if m in roots}
            self._layouts[structure] = Layout(widths, tuple(dict.fromkeys(names[m] for m in ignored)), len(padded))
        return self._layouts[structure]

    # --- what the sensitivity analysis (compress/techniques/sensitivity.py) asks of a pruning step ---

    def sensitivity_method(self) -> dict:
        method = {"step": "channel", "importance": self.importance, "taylor_batches": self.taylor_batches}
        return method | ({"skip": self.policy.skip} if self.policy.skip else {})

    def sensitivity_layers(self, model: nn.Module, ctx: Context) -> dict[str, int]:
        """The root layer of every prunable group, by name, with its number of channels."""
        return self.layout(model, ctx).widths

    def prune_alone(self, model: nn.Module, layer: str, ratio: float, ctx: Context) -> nn.Module:
        width = _channels(model.get_submodule(layer))
        return self._prune(model, 0.0, {layer: _keeping_one(width, ratio)}, 1, ctx)


def _unfollowed(model: nn.Module, exc: BaseException) -> UserError:
    """What a failure inside torch-pruning's step or the pruned forward says to the user."""
    return cannot(model, "channel-pruned", exc, "torch-pruning does not follow some of its blocks (attention "
                  "reshapes, slices of concatenations): leave them alone with technique.steps.prune.skip=[NAME,...], "
                  "or prune weights with technique=prune_magnitude")  # fmt: skip


def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    """The pruned model's forward pass on one example (in eval mode: no BatchNorm statistics move)."""
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise
        raise _unfollowed(model, exc) from exc
    finally:
        model.train(training)


def _keeping_one(width: int, ratio: float) -> float:
    """`ratio`, lowered for a layer so narrow that it would lose every channel (torch-pruning then skips the
    layer altogether): it keeps one channel."""
    return 1 - 1.5 / width if 1 < width < 1 / (1 - ratio) else ratio


def _channels(model: nn.Module) -> int:
    """Output channels/features of all conv and linear layers."""
    return sum(getattr(m, "out_channels", 0) + getattr(m, "out_features", 0) for m in model.modules())
