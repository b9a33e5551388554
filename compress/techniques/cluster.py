"""Weight sharing as in Deep Compression (Han et al. 2016): per-layer 1-D k-means of the weights.

Every Conv/Linear weight tensor is replaced by its nearest of 2^bits centroids (linear initialisation between
the layer's min and max weight, then Lloyd iterations). The file stays dense fp32 — `size_bytes` does not
move — but holds only 2^bits distinct values per layer, which entropy coding exploits (`size_gzip_bytes`).

Fine-tuning keeps the sharing: a gradient hook replaces each weight's gradient by the mean gradient of its
cluster, so all members of a cluster receive the same update and stay equal (the centroid is trained with its
mean gradient, i.e. Deep Compression's summed gradient at a learning rate divided by the cluster size).
`finalize` removes the hooks and snaps each cluster to its mean, which guarantees the 2^bits values even if
an optimizer's arithmetic drifted members apart by a rounding error.

Weights that are exactly zero (pruned before, as in Deep Compression's prune → share pipeline) are not clustered:
they form one more cluster pinned at zero, whose gradient is zero, so the sparsity survives weight sharing and
its fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from compress.errors import UserError
from compress.techniques.base import Context, Step
from compress.techniques.layers import LayerPolicy, left_alone_note


def _nearest(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of every value (bucketize on the midpoints of the sorted centroids)."""
    order = centroids.argsort()
    ordered = centroids[order]
    return order[torch.bucketize(values, (ordered[1:] + ordered[:-1]) / 2)]


def _cluster_means(values: torch.Tensor, labels: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Mean of each cluster's values; an empty cluster keeps its `fallback` value."""
    k = len(fallback)
    sums = torch.zeros(k, dtype=values.dtype).index_add_(0, labels, values)
    counts = torch.bincount(labels, minlength=k)
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback)


def kmeans_1d(values: torch.Tensor, k: int, iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids (k) and the cluster index of every value (flattened), linear initialisation, Lloyd updates."""
    flat = values.detach().flatten().float()
    centroids = torch.linspace(flat.min().item(), flat.max().item(), k)
    for _ in range(iterations):
        updated = _cluster_means(flat, _nearest(flat, centroids), centroids)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids, _nearest(flat, centroids)


def shared_values(weight: torch.Tensor, k: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k centroids of the non-zero weights followed by 0, and each weight's index into them (zeros → k)."""
    flat = weight.detach().flatten().float()
    nonzero = flat != 0
    labels = torch.full(flat.shape, k, dtype=torch.long)
    if not nonzero.any():
        return torch.zeros(k + 1), labels
    centroids, labels[nonzero] = kmeans_1d(flat[nonzero], k, iterations)  # the zeros keep label k
    return torch.cat([centroids, torch.zeros(1)]), labels


def _mean_gradient_per_cluster(labels: torch.Tensor, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Each weight's gradient → its cluster's mean gradient; the zero cluster (index k) gets none."""
    counts = torch.bincount(labels, minlength=k + 1).clamp(min=1)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        where = labels.to(grad.device)  # fine-tuned on train.device (a no-op on the CPU)
        means = torch.zeros(k + 1, dtype=grad.dtype, device=grad.device).index_add_(0, where, grad.flatten())
        means = means / counts.to(grad.device)
        means[k] = 0
        return means[where].view_as(grad)

    return hook


class Cluster(Step):
    """Shares the weights of each layer the layer policy chooses (`layers` kinds, the classifier unless
    `include_classifier` is false, not the `skip` ones) among 2^bits values (k-means); biases stay as they are."""

    uses_ratio = False

    def __init__(self, bits: int = 4, iterations: int = 30, layers: Sequence[str] = ("conv", "linear"),
                 include_classifier: bool = True, skip: Sequence[str] = ()) -> None:  # fmt: skip
        super().__init__()
        if not isinstance(bits, int) or not 1 <= bits <= 8:
            raise UserError(f"cluster bits must be an integer from 1 to 8, got {bits!r}")
        self.bits, self.iterations = bits, iterations
        self.policy = LayerPolicy.of(layers, include_classifier, skip)
        self._clusters: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def apply(self, model: nn.Module, ratio: float | None, ctx: Context) -> nn.Module:
        k = 2**self.bits
        chosen, left = self.policy.choose(model, ctx.example)
        if not chosen:
            raise UserError(f"cluster: the layer policy chooses no layer of {type(model).__name__}; "
                            "widen technique.steps.cluster.layers or skip")  # fmt: skip
        for layer in chosen.values():
            values, labels = shared_values(layer.weight, k, self.iterations)
            with torch.no_grad():
                layer.weight.copy_(values[labels].view_as(layer.weight))
            self._clusters.append((layer.weight, labels))
            self._hooks.append(layer.weight.register_hook(_mean_gradient_per_cluster(labels, k)))
        if note := left_alone_note("cluster", left):
            ctx.note(note)
        zeros = torch.cat([labels for _, labels in self._clusters]).eq(k).float().mean()
        ctx.note(
            f"cluster: {len(self._clusters)} layers × {k} shared fp32 values, {zeros:.1%} of the weights kept at "
            "zero; the saving shows in gzip size"
        )
        return model

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        for hook in self._hooks:
            hook.remove()
        with torch.no_grad():
            for weight, labels in self._clusters:
                flat = weight.flatten()
                means = _cluster_means(flat, labels, torch.zeros(2**self.bits + 1, dtype=flat.dtype))
                weight.copy_(means[labels].view_as(weight))
        return model
