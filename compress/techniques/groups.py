"""What torch-pruning may prune in a model: its dependency graph with the layers it cannot trace stood aside, and
the groups it may prune (the layer policy's layers, never the channels of zero-padded shortcuts)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn

from compress.techniques.layers import WEIGHTED, LayerPolicy

# Parameter-free layers that keep the channel count but whose internals torch-pruning traces into index mappings
# it cannot follow (LocalResponseNorm pads and pools across channels: its graph grows without bound). They stand
# aside (nn.Identity) while the dependency graph is built and while it prunes.
CHANNEL_KEEPING = (nn.LocalResponseNorm,)


@contextmanager
def standing_aside(model: nn.Module) -> Iterator[None]:
    """The CHANNEL_KEEPING layers replaced by nn.Identity for the duration of the block."""
    aside = [(name, m) for name, m in model.named_modules() if isinstance(m, CHANNEL_KEEPING)]
    for name, _ in aside:
        model.set_submodule(name, nn.Identity())
    try:
        yield
    finally:
        for name, m in aside:
            model.set_submodule(name, m)


@contextmanager
def prunable_groups(model: nn.Module, example: torch.Tensor, policy: LayerPolicy
                    ) -> Iterator[tuple[tp.DependencyGraph, list, list]]:  # fmt: skip
    """torch-pruning's dependency graph of `model` (one trace), the groups whose root layer `policy` chooses and
    that do not feed zero-padded shortcuts, and those shortcut-feeding layers, with the CHANNEL_KEEPING layers aside
    for the block."""
    ignored = policy.left_alone(model, example)
    with standing_aside(model):
        graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example)
        kept = padded_channel_layers(graph)
        yield graph, list(graph.get_all_groups(ignored_layers=[*ignored, *kept], root_module_types=WEIGHTED)), kept


def _pads_channels(node: tp.dependency.Node) -> bool:
    """Whether a traced op is a constant pad that adds channels (torch-pruning takes pads for element-wise ops)."""
    fn = node.grad_fn
    pad = getattr(fn, "_saved_pad", None) if fn is not None and "Pad" in fn.name() else None
    return pad is not None and len(pad) >= 6 and any(pad[4:6])


def padded_channel_layers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """Layers whose output channels reach a channel-padding op (the option-A shortcut of CIFAR ResNets): pruning
    them would join tensors of different widths, so they keep their channels and pruning happens inside the blocks
    (Li et al. 2017 prune ResNet-56 the same way)."""
    kept: list[nn.Module] = []
    for group in graph.get_all_groups(root_module_types=WEIGHTED):
        if any(_pads_channels(dep.target) for dep, _ in group):
            outputs = [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
            kept += [m for m in outputs if isinstance(m, WEIGHTED)]
    return list(dict.fromkeys(kept))
