"""Pruning: unstructured magnitude pruning (torch.nn.utils.prune), which zeroes weights and keeps dense
tensors, and structured channel pruning (torch-pruning), which removes channels and shrinks the model.

Both prune to the target ratio in `iterations` equal increments, fine-tuning `ctx.between_epochs`
between increments (the classic prune → retrain loop); the final ratio is the one-shot ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune
from torch.utils.hooks import RemovableHandle

from compress.data import make_loader
from compress.errors import UserError
from compress.techniques.base import Context, Step, forward_calls

LAYER_TYPES: dict[str, type[nn.Module]] = {"conv": nn.modules.conv._ConvNd, "linear": nn.Linear}

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


def _choice(knob: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise UserError(f"{knob}={value!r} is not an option; use one of {', '.join(allowed)}")
    return value


def _iterations(value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise UserError(f"iterations must be a whole number ≥ 1 (prune in that many increments), got {value!r}")
    return value


def _schedule(model: nn.Module, ctx: Context, iterations: int, finetune_between: bool):
    """Yield (index, model) once per increment, fine-tuning between increments when asked to."""
    for i in range(iterations):
        if i and finetune_between:
            model = ctx.finetune(model, ctx.between_epochs)
        yield i, model.eval()


class MagnitudePrune(Step):
    """Zero the `ratio` fraction of smallest-|w| weights of every conv/linear layer (`scope: layer`)
    or of all of them together (`scope: global`), made permanent with `prune.remove`.

    The zeros stay zero through fine-tuning: the gradients of pruned weights are masked until `finalize`.
    """

    def __init__(
        self,
        ratio: float | None = None,
        scope: str = "layer",
        layers: Sequence[str] = ("conv", "linear"),
        iterations: int = 1,
        finetune_between: bool = True,
    ):
        super().__init__(ratio)
        self.scope = _choice("scope", scope, ("layer", "global"))
        self.layer_types = tuple(LAYER_TYPES[_choice("layers", name, tuple(LAYER_TYPES))] for name in layers)
        self.iterations = _iterations(iterations)
        self.finetune_between = finetune_between
        self._masks: dict[nn.Parameter, RemovableHandle] = {}

    def pruned_layers(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model.modules() if isinstance(m, self.layer_types)]

    def apply(self, model: nn.Module, ratio: float, ctx: Context) -> nn.Module:
        for i, pruned in _schedule(model, ctx, self.iterations, self.finetune_between):
            self._prune(self.pruned_layers(pruned), ratio * (i + 1) / self.iterations)
        weights = [m.weight for m in self.pruned_layers(pruned)]
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        ctx.note(f"magnitude pruning: {zeros:.1%} of the weights of {len(weights)} layers are zero (dense storage)")
        return pruned

    def _prune(self, layers: list[nn.Module], sparsity: float) -> None:
        if self.scope == "global":
            total = sum(m.weight.numel() for m in layers)
            prune.global_unstructured(
                [(m, "weight") for m in layers], prune.L1Unstructured, amount=round(sparsity * total)
            )
        else:
            for m in layers:
                prune.l1_unstructured(m, "weight", amount=round(sparsity * m.weight.numel()))
        for m in layers:
            prune.remove(m, "weight")
            self._keep_zeros(m.weight)

    def _keep_zeros(self, weight: nn.Parameter) -> None:
        """Mask the gradient so SGD/Adam (with coupled weight decay) never move a pruned weight."""
        if weight in self._masks:
            self._masks.pop(weight).remove()
        mask = (weight != 0).to(weight.dtype)
        self._masks[weight] = weight.register_hook(lambda grad: grad * mask)

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        for handle in self._masks.values():
            handle.remove()
        self._masks.clear()
        return model


def output_layer(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last conv/linear layer a forward pass runs: the classifier, whose outputs are the classes."""
    return forward_calls(model, example, tuple(LAYER_TYPES.values()))[-1][1]


def accumulate_gradients(model: nn.Module, ctx: Context, batches: int) -> None:
    """Gradients of the task loss over the first `batches` training batches (for Taylor importance)."""
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(make_loader(ctx.data.train, ctx.batch_size, shuffle=True, seed=ctx.seed)):
        if i >= batches:
            break
        F.cross_entropy(model(x), y).backward()


class ChannelPrune(Step):
    """Remove the `ratio` fraction of the channels of every prunable group (`scope: uniform`) or of all
    channels ranked together (`scope: global`) with torch-pruning; the classifier's outputs are kept."""

    def __init__(
        self,
        ratio: float | None = None,
        importance: str = "l1",
        scope: str = "uniform",
        iterations: int = 1,
        finetune_between: bool = True,
        taylor_batches: int = 8,
        max_layer_ratio: float = 0.9,
    ):
        super().__init__(ratio)
        self.importance = _choice("importance", importance, tuple(IMPORTANCES))
        self.scope = _choice("scope", scope, ("uniform", "global"))
        self.iterations = _iterations(iterations)
        self.finetune_between = finetune_between
        self.taylor_batches = taylor_batches
        self.max_layer_ratio = max_layer_ratio

    def check_model(self, model: nn.Module) -> None:
        if self.importance == "bn_scale" and not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise UserError(
                f"importance bn_scale needs BatchNorm layers and {type(model).__name__} has none; "
                "use technique.importance=l1 (or l2, taylor, group_norm)"
            )

    def make_importance(self) -> tp.importance.Importance:
        return IMPORTANCES[self.importance]()

    def apply(self, model: nn.Module, ratio: float, ctx: Context) -> nn.Module:
        self.check_model(model)
        channels, classifier = _channels(model), output_layer(model, ctx.example)
        pruner = tp.pruner.MetaPruner(
            model.eval(), ctx.example, importance=self.make_importance(), pruning_ratio=ratio,
            pruning_ratio_dict=_keep_one_channel(model, ratio, classifier) if self.scope == "uniform" else None,
            global_pruning=self.scope == "global", max_pruning_ratio=max(ratio, self.max_layer_ratio),
            iterative_steps=self.iterations, ignored_layers=[classifier],
        )  # fmt: skip
        for _, pruned in _schedule(model, ctx, self.iterations, self.finetune_between):
            if self.importance == "taylor":
                accumulate_gradients(pruned, ctx, self.taylor_batches)
            pruner.step()
            pruned.zero_grad(set_to_none=True)
        ctx.note(f"channel pruning ({self.importance}, {self.scope}): {channels} → {_channels(pruned)} channels")
        return pruned


def _keep_one_channel(model: nn.Module, ratio: float, classifier: nn.Module) -> dict[nn.Module, float]:
    """Lower ratios for layers so narrow that `ratio` would remove every channel (torch-pruning then
    skips the layer altogether): they keep one channel."""
    widths = {m: getattr(m, "out_channels", getattr(m, "out_features", 0)) for m in model.modules()}
    return {
        m: 1 - 1.5 / width
        for m, width in widths.items()
        if isinstance(m, tuple(LAYER_TYPES.values())) and m is not classifier and 1 < width < 1 / (1 - ratio)
    }


def _channels(model: nn.Module) -> int:
    """Output channels/features of all conv and linear layers."""
    return sum(getattr(m, "out_channels", 0) + getattr(m, "out_features", 0) for m in model.modules())
