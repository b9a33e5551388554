"""Which layers a step works on: one policy for every step that picks layers (magnitude and channel pruning, ℓ0
group lasso, weight sharing, low-rank). A policy names the layer kinds, whether the classifier is among them (the
last conv/linear layer the forward pass runs, whatever order the model registers its modules in) and name patterns
(fnmatch: `features.0`, `classifier.*`) of layers to leave alone. Layers the forward pass never runs are left alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from compress.errors import UserError
from compress.techniques.base import choice, forward_calls

KINDS: dict[str, type[nn.Module]] = {"conv": nn.modules.conv._ConvNd, "linear": nn.Linear}
WEIGHTED = tuple(KINDS.values())


def _patterns(skip: str | Sequence[str]) -> tuple[str, ...]:
    patterns = (skip,) if isinstance(skip, str) else tuple(skip)
    if not all(isinstance(p, str) for p in patterns):
        raise UserError(f"skip={list(patterns)!r} must be layer names or fnmatch patterns, e.g. [features.0, 'fc*']")
    return patterns


@dataclass(frozen=True)
class LayerPolicy:
    kinds: tuple[type[nn.Module], ...] = WEIGHTED
    classifier: bool = True  # whether the classifier is among the layers
    skip: tuple[str, ...] = ()  # fnmatch patterns of layer names left alone

    @classmethod
    def of(cls, kinds: Sequence[str | type[nn.Module]] = tuple(KINDS), classifier: bool = True,
           skip: str | Sequence[str] = ()) -> LayerPolicy:  # fmt: skip
        """The policy from a step's knobs: kinds (conv, linear, or a layer class the step fixes), the classifier in
        or out, patterns."""
        types = tuple(k if isinstance(k, type) else KINDS[choice("layers", k, tuple(KINDS))] for k in kinds)
        return cls(types, classifier, _patterns(skip))

    def choose(self, model: nn.Module, example: torch.Tensor) -> tuple[dict[str, nn.Module], dict[str, str]]:
        """The chosen layers by name in the order the forward pass of `example` runs them, and the other layers of
        the policy's kinds by name with why each is left alone. A pattern that matches no layer is a UserError."""
        calls = forward_calls(model, example, WEIGHTED)
        ran = {name: module for name, module, _ in calls}
        last = calls[-1][1] if calls else None
        layers = {name: m for name, m in model.named_modules() if isinstance(m, self.kinds)}
        unmatched = [p for p in self.skip if not any(fnmatchcase(name, p) for name in layers)]
        if unmatched:
            names = ", ".join(layers) or "none"
            raise UserError(f"skip pattern {unmatched[0]!r} matches no layer of {type(model).__name__} ({names})")
        chosen, left = {}, {}
        for name in [*(n for n in ran if n in layers), *(n for n in layers if n not in ran)]:
            module = layers[name]
            pattern = next((p for p in self.skip if fnmatchcase(name, p)), None)
            if name not in ran:
                left[name] = "not run by the forward pass"
            elif pattern is not None:
                left[name] = f"skip {pattern!r}"
            elif module is last and not self.classifier:
                left[name] = "classifier"
            else:
                chosen[name] = module
        return chosen, left

    def left_alone(self, model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
        """Every conv/linear layer the policy does not choose (torch-pruning's `ignored_layers`)."""
        chosen = {id(m) for m in self.choose(model, example)[0].values()}
        return [m for m in model.modules() if isinstance(m, WEIGHTED) and id(m) not in chosen]

    def describe(self) -> dict:
        """What decides the chosen layers, for cache keys."""
        return {"kinds": sorted(k.__name__ for k in self.kinds), "classifier": self.classifier, "skip": self.skip}


def left_alone_note(step: str, left: dict[str, str]) -> str | None:
    """The row's note on the layers a step left alone (None: it left none)."""
    return f"{step} left alone: {', '.join(f'{n} ({why})' for n, why in left.items())}" if left else None
