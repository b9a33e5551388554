"""Gradient masks: what keeps pruned weights at zero while a pruned model trains."""

from __future__ import annotations

from torch import nn
from torch.utils.hooks import RemovableHandle


class KeptZeros:
    """Gradient masks that keep the zero weights of tensors at zero through fine-tuning (SGD and Adam with coupled
    weight decay never move a weight whose gradient is zero), until `release`."""

    def __init__(self) -> None:
        self._hooks: dict[nn.Parameter, RemovableHandle] = {}

    def keep(self, weight: nn.Parameter) -> None:
        if weight in self._hooks:
            self._hooks.pop(weight).remove()
        mask = (weight != 0).to(weight.dtype)
        self._hooks[weight] = weight.register_hook(lambda grad: grad * mask.to(grad.device))

    def release(self) -> None:
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()
